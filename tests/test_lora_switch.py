"""Choosing another LoRA without a restart: what the studio offers (the trained LoRA,
the checkpoints with the evaluation's best marked, LoRA folders), and `Engine.set_lora` swapping
it with the base weights restored exactly in between."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from kshd.adapters.files import DIFFUSERS_FILE
from kshd.config.compose import defaults
from kshd.drawing.catalog import NONE, LoraCatalog
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request

from .helpers.lora_files import make_adapter

DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip


def _checkpoint(root: Path, step: int, lora: Path, adapter: dict | None = None) -> Path:
    """A training checkpoint's LoRA: raw peft tensors. The random_lora fixture's rank equals its
    alpha (strength 1), so its diffusers file holds exactly the raw tensors. `adapter`: the
    record a checkpoint keeps of its adapter (None: one written before checkpoints kept it)."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    raw = load_file(str(lora / DIFFUSERS_FILE))
    save_file(raw, str(folder / "lora.safetensors"))
    state = {"adapter": adapter} if adapter else {}
    (folder / "state.json").write_text(json.dumps(state), encoding="utf-8")
    return folder


def _pixels(engine: Engine) -> tuple[np.ndarray, str]:
    out = engine.generate(Request("a girl", **DRAW), save=False)
    return np.asarray(out.images[0], dtype=np.int16), out.infotexts[0]


def test_the_catalog_lists_trained_checkpoints_best_and_folders(tmp_path, tiny_models, random_lora):
    checkpoints = tmp_path / "checkpoints"
    for step in (40, 80):
        _checkpoint(checkpoints, step, random_lora)
    (checkpoints / "checkpoint-120.tmp").mkdir()  # a half-written one is not offered
    loras = tmp_path / "loras" / "styles"
    loras.mkdir(parents=True)
    (loras / "watercolor.safetensors").write_bytes(b"")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"best_checkpoint": {"step": 80}}), encoding="utf-8")
    catalog = LoraCatalog(
        str(random_lora), str(checkpoints), str(metrics), (str(tmp_path / "loras"),)
    )
    assert catalog.choices() == [
        ("None (the base model alone)", NONE),
        (f"{random_lora.name} (trained)", str(random_lora)),
        ("checkpoint 40", str(checkpoints / "checkpoint-40")),
        ("checkpoint 80 (best)", str(checkpoints / "checkpoint-80")),
        ("watercolor", str(loras / "watercolor.safetensors")),
    ]
    nothing = LoraCatalog(str(tmp_path / "no-lora"), None, None)
    assert nothing.choices() == [("None (the base model alone)", NONE)]


def test_set_lora_swaps_without_reloading_the_base(tmp_path, tiny_models, random_lora):
    limits = defaults("generate.limits")
    settings = EngineSettings(str(tiny_models["sd"]), lora=str(random_lora), device="cpu",
                              outputs_dir=str(tmp_path), limits=limits)  # fmt: skip
    engine = Engine(settings)
    base_pixels, _ = _pixels(Engine(EngineSettings(**{**settings.__dict__, "lora": None})))
    unet = engine.txt2img.unet
    with_lora, info = _pixels(engine)
    assert "Lora hashes" in info and np.abs(with_lora - base_pixels).max() > 0
    engine.set_lora(None)
    alone, info = _pixels(engine)
    assert np.array_equal(alone, base_pixels) and "Lora hashes" not in info
    checkpoint = _checkpoint(tmp_path / "checkpoints", 8, random_lora)
    with pytest.raises(ValueError, match="alpha / rank"):
        engine.set_lora(str(checkpoint))
    engine.set_lora(str(checkpoint), checkpoint_strength=4 / 4)
    from_checkpoint, info = _pixels(engine)
    assert "<lora:checkpoint-8:1>" in info and 'Lora hashes: "checkpoint-8: ' in info
    assert np.array_equal(from_checkpoint, with_lora)  # the same weights, another file
    engine.set_lora(str(random_lora))
    again, _ = _pixels(engine)
    assert np.array_equal(again, with_lora)
    img2img = engine.mode("img2img").pipe  # image to image's pipeline
    assert engine.txt2img.unet is unet and img2img.unet is unet  # the base stayed
    missing = tmp_path / "gone.safetensors"
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        engine.set_lora(str(missing))  # refused before the LoRA in use is touched
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors: not a LoRA this model can load"):
        engine.set_lora(str(broken))  # fails while loading: the one in use is put back
    kept, info = _pixels(engine)
    assert np.array_equal(kept, with_lora) and engine.lora_path == str(random_lora)


def test_a_checkpoint_is_drawn_at_the_strength_its_record_says(tmp_path, tiny_models, random_lora):
    """A checkpoint records its adapter (kind, rank, alpha): the app loads it without the run's
    config, and its record wins over a strength given for checkpoints that keep none."""
    limits = defaults("generate.limits")
    engine = Engine(EngineSettings(str(tiny_models["sd"]), lora=str(random_lora), device="cpu",
                                   outputs_dir=str(tmp_path), limits=limits))  # fmt: skip
    with_lora, _ = _pixels(engine)
    full = _checkpoint(tmp_path / "a", 8, random_lora, make_adapter(4, 4).record())
    half = _checkpoint(tmp_path / "b", 8, random_lora, make_adapter(4, 2).record())
    old = _checkpoint(tmp_path / "c", 8, random_lora)
    engine.set_lora(str(full))
    assert np.array_equal(_pixels(engine)[0], with_lora)
    engine.set_lora(str(half), checkpoint_strength=1.0)  # alpha / rank = 0.5 recorded
    at_half, info = _pixels(engine)
    assert 'Lora hashes: "checkpoint-8: ' in info and not np.array_equal(at_half, with_lora)
    engine.set_lora(str(old), checkpoint_strength=0.5)
    assert np.array_equal(_pixels(engine)[0], at_half)
