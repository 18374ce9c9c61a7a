"""LoRA training on the tiny SD: it learns, it saves, both files load and agree."""

from __future__ import annotations

import math

import torch
from safetensors import safe_open

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE
from kshd.config.compose import defaults
from kshd.training.components import load_components
from kshd.training.loop import train_lora
from kshd.training.result import total_steps
from kshd.training.samplers import EpochSampler

from .helpers.lora_files import TRAIN_SETTINGS as SETTINGS


def _unet_out(pipe, scale: float | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 32, 32, generator=g)
    ehs = torch.randn(1, 77, 32, generator=g)
    kwargs = {} if scale is None else {"cross_attention_kwargs": {"scale": scale}}
    with torch.no_grad():
        return pipe.unet(latents, 500, encoder_hidden_states=ehs, **kwargs).sample


def _pipe(tiny_models):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)


def test_training_runs_the_expected_steps_and_logs_each(trained):
    _, result, rows = trained
    assert result.steps == 10 and result.epochs == 2  # 10 samples / batch 2 * 2 epochs
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert all(math.isfinite(r["loss"]) for r in rows)
    m = result.metrics()
    assert m["steps"] == 10 and m["images_per_s"] > 0 and m["final_loss"] == rows[-1]["loss"]


def test_lora_changes_the_unet_and_strength_zero_does_not(trained, tiny_models):
    out, _, _ = trained
    pipe = _pipe(tiny_models)
    base = _unet_out(pipe, None)
    pipe.load_lora_weights(str(out))
    tuned = _unet_out(pipe, 1.0)
    assert (tuned - base).abs().max() > 1e-4
    assert torch.allclose(_unet_out(pipe, 0.0), base, atol=1e-6)


def test_kohya_file_loads_in_diffusers_and_matches(trained, tiny_models):
    out, result, _ = trained
    with safe_open(str(out / KOHYA_FILE), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4"
    assert meta["ss_steps"] == str(result.steps) and "KSH" in meta["ss_training_comment"]
    assert all(k.startswith("lora_unet_") for k in keys)
    assert any(k.endswith(".alpha") for k in keys) and any(
        k.endswith(".lora_up.weight") for k in keys
    )
    a, b = _pipe(tiny_models), _pipe(tiny_models)
    a.load_lora_weights(str(out), weight_name=DIFFUSERS_FILE)
    b.load_lora_weights(str(out), weight_name=KOHYA_FILE)
    assert torch.allclose(_unet_out(a, 1.0), _unet_out(b, 1.0), atol=1e-5)


def test_same_seed_same_training(tiny_models, sample_split):
    losses = []
    for _ in range(2):
        c = load_components(str(tiny_models["sd"]))
        s = defaults("train", **{**SETTINGS, "epochs": 1})
        losses.append([r["loss"] for r in train_lora(c, sample_split, s).history])
    assert losses[0] == losses[1]


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(10, 3), EpochSampler(10, 3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.skip_once(4)
    assert list(b) == list(a)[4:] and list(b) == list(a)  # the skip applies once
    b.set_epoch(3)
    assert list(a) != list(b)


def test_max_train_steps_wins_over_epochs():
    assert total_steps(defaults("train", epochs=50), 100) == (5000, 50)
    assert total_steps(defaults("train", max_train_steps=120), 100) == (120, 2)
    assert total_steps(defaults("train", gradient_accumulation_steps=4, epochs=1), 10) == (3, 1)


def test_latent_std_is_recorded_and_a_wrong_scaling_factor_warned(
    tiny_models, sample_split, caplog
):
    """metrics.json's latent_std: the scaled training latents' std, which SD's scaling factor
    makes about 1; a factor 10x too big (or one left out) shows, with a warning naming the key.
    The tiny VAE has random weights and SD's factor (std 0.2): calibrated here first, as SD's
    0.18215 was measured."""

    def std_with(factor: float) -> tuple[float, bool]:
        c = load_components(str(tiny_models["sd"]))
        c.vae.register_to_config(scaling_factor=factor)
        caplog.clear()
        s = defaults("train", **{**SETTINGS, "max_train_steps": 1, "cache_latents": False})
        return train_lora(c, sample_split, s).latent_std, "check the VAE's scaling_factor" in (
            caplog.text
        )

    raw, _ = std_with(1.0)
    calibrated, warned = std_with(1.0 / raw)
    assert math.isclose(calibrated, 1.0, rel_tol=1e-3) and not warned
    wrong, warned = std_with(10.0 / raw)
    assert math.isclose(wrong, 10.0, rel_tol=1e-3) and warned
