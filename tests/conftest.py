"""Shared fixtures: the real config composed from conf/, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The demo's tiny SD and BLIP-2, saved with save_pretrained (built once, ~4 s)."""
    from kshd.builders.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture
def demo_cfg(tmp_path, tiny_models):
    """The demo profile composed from conf/ as DVC does, with every path moved into tmp_path."""
    from kshd.config import compose_conf

    cfg = compose_conf(["+experiment=demo"], conf_dir=ROOT / "conf")
    for key in ("prepared_dir", "reports_dir", "info_csv", "dataset_dir"):
        cfg.data[key] = str(tmp_path / Path(cfg.data[key]).relative_to("data"))
    cfg.data.raw_dir = str(ROOT / "data" / "samples")
    cfg.output.lora_dir = str(tmp_path / "lora")
    cfg.output.reports_dir = str(tmp_path / "reports")
    cfg.caption.model = str(tiny_models["blip2"])
    cfg.model.pretrained = str(tiny_models["sd"])
    cfg.tiny.build = False
    return cfg


@pytest.fixture(scope="session")
def sample_split(tmp_path_factory):
    """The bundled samples as a `datasets` train split with simple captions (64 px)."""
    from kshd.data.captioning import write_info_csv
    from kshd.data.dataset import build_dataset, load_rows
    from kshd.data.intake import prepare_folder

    work = tmp_path_factory.mktemp("split")
    report = prepare_folder(ROOT / "data" / "samples", work / "prepared", resolution=64)
    rows = [
        (f"prepared/{item['output']}", "a drawing, drawn by KSH drawing style")
        for item in report.images
    ]
    write_info_csv(work / "info.csv", rows)
    return build_dataset(load_rows(work / "info.csv"), holdout_fraction=0.0)["train"]


@pytest.fixture(scope="session")
def random_lora(tiny_models, tmp_path_factory) -> Path:
    """A LoRA folder for the tiny SD with random (non-zero) weights, in both file formats."""
    from diffusers import UNet2DConditionModel

    from kshd.lora import add_lora, save_lora

    from .helpers.lora_files import TINY_INFO, randomize_lora_b

    out = tmp_path_factory.mktemp("random_lora")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    add_lora(unet, rank=4, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    randomize_lora_b(unet, seed=1, scale=0.3)
    save_lora(out, unet, None, TINY_INFO)
    return out
