"""`evaluate.style_references`: what style_similarity compares with. The dataset folder (its
held-out split, as before), another dataset folder, or any folder of drawings, decoded as the
prepare stage decodes drawings; files that are not usable drawings are named, not dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kshd.config.compose import compose_conf
from kshd.config.errors import InputError
from kshd.stages.evaluate import reference_folder, reference_images

from .conftest import ROOT


def _dataset(folder: Path, train: list[tuple], holdout: list[tuple]) -> Path:
    """A DatasetDict saved as the dataset stage saves it, of plain-colour 40 px drawings."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "text": Value("string")})

    def split(colours):
        images = [Image.new("RGB", (40, 40), c) for c in colours]
        return Dataset.from_dict({"image": images, "text": ["a"] * len(images)}, features)

    DatasetDict({"train": split(train), "holdout": split(holdout)}).save_to_disk(str(folder))
    return folder


def _cfg(tmp_path: Path, references: Path | None):
    overrides = [f"data.dataset_dir={tmp_path / 'ds'}", "prepare.background=[10,20,30]"]
    if references is not None:
        overrides.append(f"evaluate.style_references={references}")
    return compose_conf(overrides, conf_dir=ROOT / "conf")


def _references(cfg):
    return reference_images(cfg, reference_folder(cfg))


def _colours(images) -> list[tuple]:
    return [images[i].getpixel((0, 0)) for i in range(len(images))]


def test_the_dataset_s_holdout_another_dataset_s_or_a_folder_of_drawings(tmp_path):
    _dataset(tmp_path / "ds", train=[(1, 1, 1)] * 3, holdout=[(255, 0, 0), (0, 255, 0)])
    refs, train = _references(_cfg(tmp_path, None))  # conf's default: the dataset folder
    assert _colours(refs) == [(255, 0, 0), (0, 255, 0)] and len(train) == 3
    other = _dataset(tmp_path / "other", train=[(9, 9, 9)], holdout=[(0, 0, 255)])
    refs, train = _references(_cfg(tmp_path, other))
    assert _colours(refs) == [(0, 0, 255)] and len(train) == 3  # memorization: still our own

    folder = tmp_path / "refs"
    (folder / "more").mkdir(parents=True)
    Image.new("RGBA", (40, 40), (200, 0, 0, 0)).save(folder / "see-through.png")
    Image.new("RGB", (48, 40), (0, 0, 200)).save(folder / "more" / "deep.jpg", quality=100)
    refs, train = _references(_cfg(tmp_path, folder))
    assert len(refs) == 2 and len(train) == 3
    assert refs[0].mode == "RGB" and refs[0].size == (48, 40)  # sorted by path: more/ first
    assert np.abs(np.asarray(refs[0], int) - (0, 0, 200)).max() <= 2
    assert refs[1].getpixel((0, 0)) == (10, 20, 30)  # transparent: prepare.background, as prepare
    assert [im.size for im in refs[0:2]] == [(48, 40), (40, 40)]  # slices decode their rows


def test_files_that_are_no_drawing_are_named_and_a_folder_without_one_fails(tmp_path, caplog):
    _dataset(tmp_path / "ds", train=[(1, 1, 1)], holdout=[(2, 2, 2)])
    folder = tmp_path / "refs"
    folder.mkdir()
    (folder / "notes.txt").write_text("my favourite drawings", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.new("RGB", (40, 40), "white").save(folder / "good.png")
    Image.new("RGB", (40, 40), "white").save(folder / ".hidden.png")  # as prepare: not an input
    with caplog.at_level(logging.WARNING):
        refs, _ = _references(_cfg(tmp_path, folder))
    assert len(refs) == 1
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 2, left_out
    assert any("notes.txt" in m and "not an image file" in m for m in left_out)
    assert any("broken.png" in m and "not an image" in m for m in left_out)
    assert all(m.startswith("evaluate.style_references: ") for m in left_out)

    (folder / "good.png").unlink()
    with pytest.raises(InputError, match=r"^evaluate.style_references: .*no usable drawing"):
        _references(_cfg(tmp_path, folder))
    with pytest.raises(InputError, match=r"^evaluate.style_references: .* is not a folder"):
        _references(_cfg(tmp_path, tmp_path / "nowhere"))
