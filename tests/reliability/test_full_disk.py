"""A full disk while writing an output: a clear error naming it, and the previous one intact.

The disk is filled for real as far as the writer can tell: RLIMIT_FSIZE makes the kernel refuse
every write past a size with EFBIG, mid-file, exactly where a full disk would give ENOSPC.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from kshd.adapters.files import write_diffusers
from kshd.data.captioning import read_info_csv, write_info_csv
from kshd.fileio import WriteError, write_json
from kshd.training.checkpoints import Progress, complete_checkpoints, save_checkpoint


@contextmanager
def disk_full_after(limit: int) -> Iterator[None]:
    """Writes that would make a file larger than `limit` bytes fail (SIGXFSZ ignored)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_info_csv_keeps_the_previous_version(tmp_path):
    path = tmp_path / "info.csv"
    old = [("a.png", "a girl, drawn by KSH drawing style")]
    write_info_csv(path, old)
    before = path.read_bytes()
    new = [(f"{i}.png", f"caption number {i}, drawn by KSH drawing style") for i in range(50)]
    with disk_full_after(256), pytest.raises(WriteError) as err:
        write_info_csv(path, new)
    message = str(err.value)
    assert str(path) in message and "File too large" in message
    assert "previous version is unchanged" in message and "Free some disk space" in message
    assert path.read_bytes() == before and read_info_csv(path) == old
    assert _leftovers(tmp_path) == []


def test_a_first_write_says_nothing_was_written(tmp_path):
    with disk_full_after(64), pytest.raises(WriteError, match="nothing was written"):
        write_json(tmp_path / "report.json", {"rows": list(range(100))})
    assert list(tmp_path.iterdir()) == []


def _state(n: int) -> dict[str, torch.Tensor]:
    return {f"unet.block{i}.lora_A.weight": torch.full((64, 64), float(n)) for i in range(4)}


def test_checkpoint_write_fails_cleanly_and_earlier_checkpoints_stay(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(
        root, "fp", Progress(step=2), _state(2), {"state": {}, "param_groups": []}, {}, None
    )
    with disk_full_after(20_000), pytest.raises(WriteError) as err:
        save_checkpoint(
            root, "fp", Progress(step=4), _state(4), {"state": {}, "param_groups": []}, {}, None
        )
    assert "checkpoint-4" in str(err.value) and "earlier checkpoints are kept" in str(err.value)
    assert [step for step, _ in complete_checkpoints(root)] == [2]
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-2"]


def test_lora_file_from_safetensors_keeps_the_previous_one(tmp_path):
    first = write_diffusers(_state_peft(1.0), tmp_path)
    before = first.read_bytes()
    with disk_full_after(4_000), pytest.raises(WriteError, match="previous version is unchanged"):
        write_diffusers(_state_peft(2.0), tmp_path)
    assert first.read_bytes() == before and _leftovers(tmp_path) == []


def _state_peft(value: float) -> dict[str, torch.Tensor]:
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_{}.weight"
    return {
        key.format("A"): torch.full((4, 320), value),
        key.format("B"): torch.full((320, 4), value),
    }
