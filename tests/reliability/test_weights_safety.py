"""Weights are loaded only from safetensors: a pickle planted in a model folder is never run.

Each planted `.bin` is a pickle whose loading would create a marker file (what an attacker's
payload would do instead); every loader must refuse the folder and the marker must not appear.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest

from ..conftest import ROOT


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(folder: Path, name: str, marker: Path) -> None:
    for found in folder.glob("*.safetensors"):
        found.unlink()
    (folder / name).write_bytes(pickle.dumps(_Payload(marker)))


@pytest.fixture
def poisoned_sd(tiny_models, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(tiny_models["sd"], sd)
    _plant(sd / "unet", "diffusion_pytorch_model.bin", tmp_path / "UNPICKLED")
    return sd, tmp_path / "UNPICKLED"


def test_training_refuses_a_pickled_unet(poisoned_sd):
    from kshd.training.components import load_components

    sd, marker = poisoned_sd
    with pytest.raises(OSError, match="safetensors"):
        load_components(str(sd))
    assert not marker.exists()


def test_drawing_refuses_a_pickled_unet(poisoned_sd):
    import torch

    from kshd.models.loading import load_sd_pipeline

    sd, marker = poisoned_sd
    with pytest.raises(OSError):
        load_sd_pipeline(str(sd), None, None, torch.device("cpu"), torch.float32)
    assert not marker.exists()


def test_captioning_refuses_a_pickled_blip2(tiny_models, tmp_path):
    from kshd.captioners.blip2 import Blip2Captioner
    from kshd.config.compose import defaults

    blip = tmp_path / "blip2"
    shutil.copytree(tiny_models["blip2"], blip)
    _plant(blip, "pytorch_model.bin", tmp_path / "UNPICKLED")
    with pytest.raises(OSError):
        Blip2Captioner(defaults("caption", model=str(blip)))
    assert not (tmp_path / "UNPICKLED").exists()


def test_metrics_refuse_a_pickled_clip(tiny_models, tmp_path):
    from kshd.evaluation.metrics import ClipEncoder

    clip = tmp_path / "clip"
    shutil.copytree(tiny_models["clip"], clip)
    _plant(clip, "pytorch_model.bin", tmp_path / "UNPICKLED")
    with pytest.raises(OSError):
        ClipEncoder(str(clip))
    assert not (tmp_path / "UNPICKLED").exists()


def test_a_lora_folder_with_only_a_pickle_is_refused(tmp_path):
    from kshd.adapters.weights import open_weights

    _plant(tmp_path, "pytorch_lora_weights.bin", tmp_path / "UNPICKLED")
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights.safetensors"):
        open_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match=".safetensors"):
        open_weights(tmp_path / "pytorch_lora_weights.bin")
    assert not (tmp_path / "UNPICKLED").exists()


def test_no_code_path_unpickles_or_runs_remote_code():
    sources = {p: p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py")}
    for pattern in (r"trust_remote_code\s*=\s*True", r"torch\.load\(", r"pickle\.loads?\("):
        assert not [p for p, text in sources.items() if re.search(pattern, text)], pattern
