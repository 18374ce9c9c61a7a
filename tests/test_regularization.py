"""Regularization drawings (kohya's reg_data_dir, DreamBooth's prior preservation): `data.reg_dir`
is prepared and captioned as the artist's drawings are, captioned without the trigger phrase, kept
in the dataset's `reg` split, and trained as many per epoch as the artist's drawings, weighted by
`train.prior_loss_weight`. test_learning proves what they are for: the style comes with the
trigger phrase."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from kshd.config.compose import defaults, with_values
from kshd.config.errors import UserError
from kshd.data.captioning import read_info_csv
from kshd.stages import caption, dataset, prepare, train
from kshd.training.components import load_components
from kshd.training.samplers import EpochSampler, epoch_members

from .helpers.lora_files import TRIGGER
from .helpers.loss import seeded_loss

ROOT = Path(__file__).resolve().parent.parent
REG = ROOT / "data" / "sample_reg"
REG_TRIGGER_WARNING = "regularization drawings' captions contain the trigger phrase"


@pytest.fixture
def reg_cfg(demo_cfg):
    return with_values(demo_cfg, {"data.reg_dir": str(REG)})


def _through_dataset(cfg) -> dict:
    prepare.run(cfg)
    caption.run(cfg)
    return dataset.run(cfg)


def test_the_stages_carry_the_regularization_drawings_without_the_trigger(reg_cfg, caplog):
    counts = _through_dataset(reg_cfg)
    assert counts == {"train": 8, "holdout": 2, "reg": 10}
    report = json.loads((Path(reg_cfg.data.reports_dir) / "prepare.json").read_text())
    assert report["accepted"] == 10 and report["reg"]["accepted"] == 10
    assert len(list((Path(reg_cfg.data.prepared_dir) / "reg").glob("*.png"))) == 10
    rows = read_info_csv(reg_cfg.data.info_csv)
    reg_rows = read_info_csv(reg_cfg.data.reg_info_csv)
    assert len(rows) == 10 and all(text.endswith(TRIGGER) for _, text in rows)
    sidecars = {p.read_text(encoding="utf-8").strip() for p in REG.glob("*.txt")}
    assert {text for _, text in reg_rows} == sidecars  # the .txt captions, no trigger added
    assert all("reg/" in image for image, _ in reg_rows)
    captions = json.loads((Path(reg_cfg.data.reports_dir) / "captions.json").read_text())
    assert captions["captions"] == 10 and captions["reg"]["sources"]["sidecar"] == 10
    from datasets import load_from_disk

    ds = load_from_disk(reg_cfg.data.dataset_dir)
    assert sorted(ds["reg"]["text"]) == sorted(sidecars)
    # no regularization caption was found naming the trigger (the tiny BLIP-2 may leave an
    # artist's drawing's caption empty, which is warned of on its own)
    assert REG_TRIGGER_WARNING not in caplog.text


def test_no_folder_means_none_and_a_later_empty_one_removes_them(reg_cfg, tmp_path):
    assert "reg" in _through_dataset(reg_cfg)
    reg_cfg = with_values(reg_cfg, {"data.reg_dir": str(tmp_path / "no-such-folder")})
    assert _through_dataset(reg_cfg) == {"train": 8, "holdout": 2}
    assert not (Path(reg_cfg.data.prepared_dir) / "reg").exists()
    assert read_info_csv(reg_cfg.data.reg_info_csv) == []
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").touch()  # what data/reg/ holds in a clone
    reg_cfg = with_values(reg_cfg, {"data.reg_dir": str(tmp_path / "empty")})
    report = prepare.run(reg_cfg)
    assert report.accepted == 10
    assert (
        json.loads((Path(reg_cfg.data.reports_dir) / "prepare.json").read_text())["reg"]["inputs"]
        == 0
    )


def test_a_regularization_caption_naming_the_trigger_is_warned(reg_cfg, tmp_path, caplog):
    folder = tmp_path / "reg"
    folder.mkdir()
    for p in sorted(REG.glob("plain-05000[01].*")):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "plain-050001.txt").write_text(f"a girl, {TRIGGER}", encoding="utf-8")
    reg_cfg = with_values(reg_cfg, {"data.reg_dir": str(folder)})
    prepare.run(reg_cfg)
    with caplog.at_level(logging.WARNING):
        caption.run(reg_cfg)
    assert "plain-050001.png" in caplog.text and REG_TRIGGER_WARNING in caplog.text


def test_each_epoch_takes_as_many_regularization_drawings_in_turn():
    for n, m in ((3, 5), (4, 2), (3, 3)):
        seen = set()
        for epoch in range(math.ceil(m / n)):
            members = epoch_members(n, m, epoch)
            assert members[:n] == list(range(n)) and len(members) == 2 * n
            assert all(n <= i < n + m for i in members[n:])
            seen |= set(members[n:])
        assert seen == set(range(n, n + m))  # each used (repeated when fewer)
    assert epoch_members(5, 0, 3) == list(range(5))
    # without regularization drawings the order is the one earlier runs resume into
    sampler = EpochSampler(7, seed=3)
    sampler.set_epoch(2)
    g = torch.Generator().manual_seed(3 * 1000 + 2)
    assert list(sampler) == torch.randperm(7, generator=g).tolist()
    with_reg = EpochSampler(7, seed=3, n_reg=4)
    with_reg.set_epoch(2)
    assert len(with_reg) == 14 and sorted(with_reg)[:7] == list(range(7))


def test_prior_loss_weight_weighs_each_drawing_s_loss(tiny_models):
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train")
    latents = torch.randn(2, 4, 8, 8)
    hidden = torch.randn(2, 77, c.text_encoder.config.hidden_size)

    def loss(weights):
        w = None if weights is None else torch.tensor(weights)
        return seeded_loss(c, s, latents, hidden, w)

    plain, first, second = loss(None), loss([1.0, 0.0]), loss([0.0, 1.0])
    assert first > 0 and second > 0
    assert first + second == pytest.approx(plain, rel=1e-5)  # the batch mean, split by drawing
    assert loss([1.0, 1.0]) == pytest.approx(plain, rel=1e-6)
    assert loss([1.0, 0.5]) == pytest.approx(first + 0.5 * second, rel=1e-5)


def test_the_train_stage_trains_them_balanced_and_records_them(reg_cfg):
    _through_dataset(reg_cfg)
    metrics = train.run(reg_cfg)
    t = reg_cfg.train
    assert metrics["reg_images"] == 10
    assert metrics["steps"] == math.ceil(2 * 8 / t.batch_size) * t.epochs  # 8 + 8 an epoch
    from safetensors import safe_open

    kohya = Path(reg_cfg.output.lora_dir) / "ksh_drawing_style.safetensors"
    with safe_open(str(kohya), "pt") as f:
        meta = f.metadata()
    assert meta["ss_num_train_images"] == "8" and meta["ss_num_reg_images"] == "10"


def test_buckets_with_regularization_drawings_stop_before_any_model_loads(reg_cfg, monkeypatch):
    _through_dataset(reg_cfg)
    reg_cfg = with_values(reg_cfg, {"train.buckets": True})
    monkeypatch.setattr(train, "load_components", None)  # calling it would fail otherwise
    with pytest.raises(UserError, match=r"^train\.buckets=true .*data\.reg_dir.*: set train"):
        train.run(reg_cfg)
