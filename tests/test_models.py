"""Tiny models: deterministic from a seed, loaded through the real from_pretrained path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kshd.models import build_tiny_models, check_model_source, tiny_clip_tokenizer


def test_same_seed_gives_identical_weights(tmp_path, tiny_models):
    again = build_tiny_models(tmp_path, seed=0)
    for name, rel in [
        ("sd", "unet/diffusion_pytorch_model.safetensors"),
        ("sd", "text_encoder/model.safetensors"),
        ("blip2", "model.safetensors"),
        ("clip", "model.safetensors"),
        ("dino", "model.safetensors"),
    ]:
        a, b = load_file(tiny_models[name] / rel), load_file(again[name] / rel)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}/{rel} differs"


def test_building_is_idempotent_and_leaves_no_temp_folders(tmp_path):
    build_tiny_models(tmp_path, seed=1)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    build_tiny_models(tmp_path, seed=1)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blip2", "clip", "dino", "sd"]


def test_weights_are_safetensors_only(tiny_models):
    files = [p for root in tiny_models.values() for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert [p for p in files if p.suffix == ".safetensors"]


def test_pipeline_loads_and_draws(tiny_models):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"])
    pipe.set_progress_bar_config(disable=True)

    def draw():
        return pipe(
            "drawn by KSH drawing style",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
        ).images[0]

    img, img2 = draw(), draw()
    assert img.size == (64, 64) and img.tobytes() == img2.tobytes()


def test_byte_level_tokenizer_handles_any_text():
    tok = tiny_clip_tokenizer()
    ids = tok("소녀, drawn by KSH", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < len(tok)
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "소녀,drawnbyksh"


def test_missing_local_model_folder_is_named_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        check_model_source(str(tmp_path / "nope"), "model.pretrained")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):  # offline, not cached
        check_model_source("stablediffusionapi/anything-v5", "model.pretrained")
