"""Optional training features: text-encoder LoRA, caption dropout, tag shuffling, min-SNR."""

from __future__ import annotations

import math
import random

import pytest
import torch
from safetensors import safe_open

from kshd.adapters.files import KOHYA_FILE, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import defaults
from kshd.training.batches import caption_variant
from kshd.training.components import load_components
from kshd.training.loop import train_lora

from .helpers.lora_files import TRIGGER, tiny_info

BASE = dict(resolution=64, batch_size=2, epochs=1, learning_rate=1e-2, seed=3)


def test_caption_dropout_and_shuffling_keep_the_trigger_phrase():
    text = f"a girl, blonde hair, green eyes, smile, {TRIGGER}"
    rng = random.Random(0)
    variants = [caption_variant(text, TRIGGER, 0.0, True, rng) for _ in range(30)]
    assert all(v.endswith(TRIGGER) for v in variants)
    assert all(sorted(v.split(", ")) == sorted(text.split(", ")) for v in variants)
    assert len(set(variants)) > 5
    dropped = [caption_variant(text, TRIGGER, 0.5, False, rng) for _ in range(400)]
    assert 120 < dropped.count("") < 280 and set(dropped) == {"", text}
    assert caption_variant(text, TRIGGER, 0.0, False, rng) == text


def test_kohya_text_encoder_keys_use_sd1_naming():
    from kshd.adapters.kohya_names import _sd1_text_encoder_name

    assert _sd1_text_encoder_name("lora_te1_encoder_layers_0_self_attn_q_proj.alpha") == (
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"
    )
    assert _sd1_text_encoder_name(
        "lora_te1_text_model_encoder_layers_3_mlp_fc1.lora_up.weight"
    ) == ("lora_te_text_model_encoder_layers_3_mlp_fc1.lora_up.weight")
    assert _sd1_text_encoder_name("lora_unet_mid_block_attentions_0.alpha") == (
        "lora_unet_mid_block_attentions_0.alpha"
    )


def test_text_encoder_lora_trains_saves_and_loads(tiny_models, sample_split, tmp_path):
    from diffusers import StableDiffusionPipeline

    c = load_components(str(tiny_models["sd"]))
    s = defaults("train", **BASE, train_text_encoder=True, cache_latents=True)
    result = train_lora(c, sample_split, s, cache_dir=tmp_path / "cache")
    assert result.steps == 5
    lora = build_adapter(s.adapter, s.rank, s.alpha)
    state = lora.tensors(c.unet, c.text_encoder)
    assert any(k.startswith("text_encoder.") for k in state)
    info = tiny_info(steps=5, epochs=1, seed=3, train_text_encoder=True)
    save_adapter(tmp_path, lora, info, c.unet, c.text_encoder)
    with safe_open(str(tmp_path / KOHYA_FILE), "pt") as f:
        te_keys = [k for k in f.keys() if k.startswith("lora_te")]  # noqa: SIM118
        assert f.metadata()["ss_text_encoder_lr"] == f.metadata()["ss_unet_lr"] == "0.01"
    # SD 1.x kohya naming, as A1111 and ComfyUI read it
    assert te_keys and all(k.startswith("lora_te_text_model_encoder_layers_") for k in te_keys)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    ids = pipe.tokenizer(TRIGGER, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        before = pipe.text_encoder(ids.input_ids)[0]
        pipe.load_lora_weights(str(tmp_path))
        after = pipe.text_encoder(ids.input_ids)[0]
    assert (after - before).abs().max() > 1e-5


def test_min_snr_noise_offset_and_v_prediction_train(tiny_models, sample_split):
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train", **BASE, snr_gamma=5.0, noise_offset=0.1, prediction_type="v_prediction")
    result = train_lora(c, sample_split, s)
    assert c.noise_scheduler.config.prediction_type == "v_prediction"
    assert result.steps == 5 and all(math.isfinite(h["loss"]) for h in result.history)
    plain = train_lora(
        load_components(str(tiny_models["sd"])), sample_split, defaults("train", **BASE)
    )
    assert [h["loss"] for h in plain.history] != [h["loss"] for h in result.history]


def test_gradient_checkpointing_and_workers_train_the_same(tiny_models, sample_split, tmp_path):
    def losses(**kw):
        s = defaults("train", **{**BASE, "epochs": 1, **kw})
        c = load_components(str(tiny_models["sd"]))
        return [h["loss"] for h in train_lora(c, sample_split, s, cache_dir=tmp_path).history]

    plain = losses()
    assert losses(gradient_checkpointing=True) == pytest.approx(plain, rel=1e-5)
    assert losses(dataloader_num_workers=2) == pytest.approx(plain, rel=1e-5)
