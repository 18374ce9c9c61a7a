"""Tiny models: deterministic from a seed, loaded through the real from_pretrained path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kshd.config.errors import UserError
from kshd.models.source import check_model_source
from kshd_world import clip_bpe
from kshd_world.tiny import TINY_MANIFEST, build_tiny_models

OPENAI_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]  # openai/clip-vit-large-patch14's ids


def test_same_seed_gives_identical_weights(tmp_path, tiny_models):
    again = build_tiny_models(tmp_path, seed=0)
    for name, rel in [
        ("sd", "unet/diffusion_pytorch_model.safetensors"),
        ("sd", "text_encoder/model.safetensors"),
        ("blip2", "model.safetensors"),
        ("clip", "model.safetensors"),
        ("dino", "model.safetensors"),
        ("controlnet", "diffusion_pytorch_model.safetensors"),
        ("sd-inpaint", "unet/diffusion_pytorch_model.safetensors"),
        ("sdxl", "text_encoder_2/model.safetensors"),
    ]:
        a, b = load_file(tiny_models[name] / rel), load_file(again[name] / rel)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}/{rel} differs"


def test_building_is_idempotent_and_leaves_no_temp_folders(tmp_path):
    build_tiny_models(tmp_path, seed=1)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    build_tiny_models(tmp_path, seed=1)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    names = ["blip2", "clip", "controlnet", "dino", "sd", "sd-inpaint", "sdxl", "sdxl-controlnet",
             "single-file"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == names


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


def test_tiny_models_tokenize_as_clip_and_sd(tiny_models, tmp_path):
    from transformers import CLIPProcessor, CLIPTokenizer

    sd = CLIPTokenizer.from_pretrained(tiny_models["sd"], subfolder="tokenizer")
    clip = CLIPProcessor.from_pretrained(tiny_models["clip"]).tokenizer
    # Only the two files CLIP's and SD's repositories ship, as other tools read them.
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((tiny_models["sd"] / "tokenizer" / name).read_bytes())
    files_only = CLIPTokenizer(
        vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt")
    )
    for tok in (sd, clip, files_only):
        assert len(tok) == 49408 and tok("a photo of a cat").input_ids == OPENAI_CAT
    assert sd.model_max_length == clip.model_max_length == 77
    long = sd("drawn by KSH drawing style, " * 20, truncation=True).input_ids
    assert len(long) == 77 and long[-1] == 49407  # truncated as SD 1.x truncates
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + 49152 - 256 - 2


def test_tiny_text_towers_have_clip_vocabulary_and_special_ids(tiny_models):
    from transformers import CLIPConfig, CLIPTextConfig

    sd = CLIPTextConfig.from_pretrained(tiny_models["sd"], subfolder="text_encoder")
    clip = CLIPConfig.from_pretrained(tiny_models["clip"]).text_config
    for cfg in (sd, clip):
        assert cfg.vocab_size == 49408
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (0, 2, 1)


def test_tiny_vae_downsamples_by_8_like_sd(tiny_models):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(tiny_models["sd"], subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 256, 256)).latent_dist.mode()
        back = vae.decode(latents).sample
    assert latents.shape == (1, 4, 32, 32) and back.shape == (1, 3, 256, 256)
    assert len(vae.config.block_out_channels) == 4  # three downsamplings: 2**3 = 8
    assert unet.config.sample_size * 8 == 128  # the pipeline's default size


def test_out_of_date_tiny_folder_is_rebuilt_and_current_ones_kept(tiny_models, tmp_path):
    import shutil

    for name in ("sd", "clip"):
        shutil.copytree(tiny_models[name], tmp_path / name)
    manifest = tmp_path / "sd" / TINY_MANIFEST
    manifest.write_text(manifest.read_text().replace('"builder_version": ', '"builder_version": -'))
    (tmp_path / "clip" / TINY_MANIFEST).unlink()  # a folder built before manifests existed
    stale = tmp_path / "sd" / "stale.txt"
    stale.write_text("an older builder's file")
    build_tiny_models(tmp_path, seed=0)
    assert not stale.exists() and (tmp_path / "clip" / TINY_MANIFEST).is_file()
    for name in ("sd", "clip"):
        assert (tmp_path / name / TINY_MANIFEST).read_bytes() == (
            tiny_models[name] / TINY_MANIFEST
        ).read_bytes()


def test_missing_bpe_wheel_is_one_line_saying_how_to_install(monkeypatch):
    import importlib.metadata
    import importlib.util

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    clip_bpe._clip_vocab_and_merges.cache_clear()
    try:
        with pytest.raises(UserError, match="pip install --no-deps open-clip-torch") as err:
            clip_bpe.clip_bpe_tokenizer()
    finally:
        clip_bpe._clip_vocab_and_merges.cache_clear()
    assert "\n" not in str(err.value)


def test_missing_local_model_folder_is_named_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        check_model_source(str(tmp_path / "nope"), "model.pretrained")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):  # offline, not cached
        check_model_source("stablediffusionapi/anything-v5", "model.pretrained")


def test_local_model_identity_follows_content_not_place_or_time(tiny_models, tmp_path):
    import os
    import shutil

    from safetensors.torch import save_file

    from kshd.models.identity import model_identity

    original = model_identity(str(tiny_models["sd"]), None)
    copy = shutil.copytree(tiny_models["sd"], tmp_path / "elsewhere" / "sd")
    for path in copy.rglob("*"):
        os.utime(path, ns=(0, 0))  # a copy with other times, as rsync or a download gives
    assert model_identity(str(copy), None) == original

    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size > 1 << 20  # sampled, not read whole
    saved = weights.read_bytes()
    tensors = load_file(weights)
    save_file({k: v + 1e-3 for k, v in tensors.items()}, weights)  # the same shapes, trained on
    changed = model_identity(str(copy), None)
    assert changed["content"] != original["content"]

    weights.write_bytes(saved)
    assert model_identity(str(copy), None) == original  # the original weights again
    scheduler = copy / "scheduler" / "scheduler_config.json"
    scheduler.write_text(scheduler.read_text().replace("0.012", "0.02"), encoding="utf-8")
    assert model_identity(str(copy), None)["content"] not in (
        original["content"],
        changed["content"],
    )
    assert model_identity("stablediffusionapi/anything-v5", "main") == {
        "id": "stablediffusionapi/anything-v5",
        "revision": "main",
    }
