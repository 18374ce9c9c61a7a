"""info.csv -> Hugging Face dataset: columns, splits, byte-identical rebuilds, named errors."""

from __future__ import annotations

import filecmp

import pytest
from datasets import load_from_disk
from PIL import Image

from kshd.data.captioning import read_info_csv
from kshd.data.dataset import holdout_mask, save_dataset
from kshd_world.samples import noise_drawings


def test_dataset_has_image_and_text_and_both_splits(tmp_path):
    rows = read_info_csv(noise_drawings(tmp_path, 10, 16))
    counts = save_dataset(tmp_path / "info.csv", tmp_path / "ds", 0.2, "drawn by KSH drawing style")
    ds = load_from_disk(str(tmp_path / "ds"))
    assert set(ds) == {"train", "holdout"}
    assert counts == {"train": len(ds["train"]), "holdout": len(ds["holdout"])}
    assert sum(counts.values()) == len(rows) and counts["holdout"] >= 1
    assert ds["train"].column_names == ["image", "text"]
    assert isinstance(ds["train"][0]["image"], Image.Image)
    texts = set(ds["train"]["text"]) | set(ds["holdout"]["text"])
    assert texts == {t for _, t in rows}
    assert "drawn by KSH drawing style" in (tmp_path / "ds" / "README.md").read_text()


def test_no_holdout_saves_an_empty_split_that_loads(tmp_path):
    noise_drawings(tmp_path, 10, 16)
    assert save_dataset(tmp_path / "info.csv", tmp_path / "ds", 0.0, "t") == {
        "train": 10,
        "holdout": 0,
    }
    ds = load_from_disk(str(tmp_path / "ds"))
    assert len(ds["train"]) == 10 and len(ds["holdout"]) == 0


def test_rebuild_is_byte_identical(tmp_path):
    noise_drawings(tmp_path, 10, 16)
    save_dataset(tmp_path / "info.csv", tmp_path / "a", 0.2, "t")
    save_dataset(tmp_path / "info.csv", tmp_path / "b", 0.2, "t")
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ("train", "holdout"):
        assert not filecmp.dircmp(tmp_path / "a" / sub, tmp_path / "b" / sub).diff_files


def test_holdout_is_stable_when_drawings_are_added():
    digests = [f"{i:064x}" for i in range(0, 2**64, 2**58)]
    before = holdout_mask(digests[:10], 0.3)
    after = holdout_mask(digests, 0.3)
    assert after[:10] == before
    assert holdout_mask(digests, 0.0) == [False] * len(digests)


def test_missing_image_stops_with_the_row_named(tmp_path):
    noise_drawings(tmp_path, 3, 16)
    (tmp_path / "prepared" / "0001.png").unlink()
    with pytest.raises(FileNotFoundError, match="row 3"):
        save_dataset(tmp_path / "info.csv", tmp_path / "ds", 0.2, "t")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}]
)
def test_push_without_network_fails_fast_and_keeps_the_local_dataset(tmp_path, env):
    import os
    import subprocess
    import sys

    noise_drawings(tmp_path, 10, 16)
    save_dataset(tmp_path / "info.csv", tmp_path / "ds", 0.2, "t")
    code = (
        "from kshd.data.dataset import push_dataset; "
        f"push_dataset({str(tmp_path / 'ds')!r}, 'someone/ksh', True)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "someone/ksh" in proc.stderr and "is intact" in proc.stderr
    assert len(load_from_disk(str(tmp_path / "ds"))["train"]) >= 1
