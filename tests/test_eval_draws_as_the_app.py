"""Evaluation and validation draw as `kshd generate` does: A1111 prompts, prefixes, sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request
from kshd.evaluation.evaluate import (
    base_cache_folder,
    sample,
    strip_trigger,
    use_sampler,
    validation_images,
)
from kshd.models.loading import load_sd_pipeline
from kshd.training.components import load_components

from .helpers.settings import sample_settings

TRIGGER = "drawn by KSH drawing style"
PREFIX = f"({TRIGGER} : 1.5), "
# weighted, and past 77 tokens with either tokenizer: diffusers alone would truncate and read
# the brackets as text
PROMPT = "an anime girl, (blonde hair:1.3), [green eyes], " + ", ".join(
    f"detail {i}" for i in range(60)
)
NEGATIVE = "lowres, (bad hands:1.2)"
NEG_PREFIX = "(worst quality:1.4), blurry, "
APP = dict(positive_prefix=PREFIX, negative_prefix=NEG_PREFIX, sampler="euler")


def _settings(**kw):
    base = dict(
        prompts=(PROMPT,),
        negative_prompt=NEGATIVE,
        seeds=(5,),
        num_inference_steps=3,
        guidance_scale=7.5,
        resolution=64,
        **APP,
    )
    return sample_settings(**{**base, **kw})


def _app_image(
    sd: Path, lora: Path | None = None, negative: str = NEGATIVE, **engine: object
) -> np.ndarray:
    engine = Engine(
        EngineSettings(str(sd), lora=str(lora) if lora else None, device="cpu", **engine)
    )
    req = Request(
        prompt=PROMPT,
        negative_prompt=negative,
        positive_prefix=PREFIX,
        negative_prefix=NEG_PREFIX,
        sampler="euler",
        steps=3,
        cfg_scale=7.5,
        seed=5,
        width=64,
        height=64,
        lora_scale=1.0,
    )
    return np.asarray(engine.generate(req, save=False).images[0], dtype=np.int16)


def _pipe(sd: Path):
    pipe = load_sd_pipeline(str(sd), None, None, torch.device("cpu"), torch.float32)
    use_sampler(pipe, "euler")
    return pipe


def test_evaluation_draws_what_the_app_draws(tiny_models):
    pipe = _pipe(tiny_models["sd"])
    drawn = np.asarray(sample(pipe, [PROMPT], _settings(), None, "base")[0][0], dtype=np.int16)
    assert np.array_equal(drawn, _app_image(tiny_models["sd"]))


def test_evaluation_with_the_lora_draws_what_the_app_draws(tiny_models, random_lora):
    """The app fuses the LoRA into the weights, evaluation scales it: equal up to rounding."""
    pipe = _pipe(tiny_models["sd"])
    pipe.load_lora_weights(str(random_lora), use_safetensors=True)
    drawn = np.asarray(sample(pipe, [PROMPT], _settings(), 1.0, "LoRA")[0][0], dtype=np.int16)
    app = _app_image(tiny_models["sd"], random_lora)
    assert np.abs(drawn - app).max() <= 2
    assert np.abs(drawn - np.asarray(_app_image(tiny_models["sd"]))).mean() > 1  # LoRA matters


def test_validation_draws_what_the_app_draws(tiny_models):
    c = load_components(str(tiny_models["sd"]))
    images = validation_images(c, PROMPT, NEGATIVE, (5,), 3, 64, **APP)
    assert np.array_equal(np.asarray(images[0], dtype=np.int16), _app_image(tiny_models["sd"]))


def test_at_clip_skip_2_evaluation_and_validation_draw_what_the_app_draws(tiny_models):
    """`model.clip_skip` reaches the evaluation's encoder, the training's validation images and
    the app alike (the long prompt's every chunk at the penultimate layer)."""
    from kshd.stages.evaluate import app_encoder

    app = _app_image(tiny_models["sd"], clip_skip=2)
    assert np.abs(app - _app_image(tiny_models["sd"])).mean() > 0.5  # the layer matters
    pipe = _pipe(tiny_models["sd"])
    encoder, _ = app_encoder(pipe, {}, 2)
    drawn = sample(pipe, [PROMPT], _settings(), None, "base", encoder)[0][0]
    assert np.array_equal(np.asarray(drawn, dtype=np.int16), app)
    c = load_components(str(tiny_models["sd"]), clip_skip=2)
    images = validation_images(c, PROMPT, NEGATIVE, (5,), 3, 64, **APP)
    assert np.array_equal(np.asarray(images[0], dtype=np.int16), app)


def test_the_no_trigger_variant_drops_the_weighted_trigger_too():
    full = PREFIX + "drawn by KSH drawing style, a cat, (blue sky:1.2)"
    assert strip_trigger(full, TRIGGER) == "a cat, (blue sky:1.2)"
    assert strip_trigger(f"[{TRIGGER}], a cat", TRIGGER) == "a cat"


def test_base_images_are_keyed_by_the_app_settings(tmp_path):
    keys = {
        base_cache_folder(tmp_path, {"id": "m"}, _settings(**kw))
        for kw in ({}, {"positive_prefix": ""}, {"negative_prefix": ""}, {"sampler": "ddim"})
    }
    assert len(keys) == 4


def test_an_unknown_sampler_names_the_key():
    from kshd.config.compose import defaults
    from kshd.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"evaluate\.sampler"):
        _settings(sampler="dpm_fast")
    with pytest.raises(ConfigError, match=r"train\.validation_sampler"):
        defaults("train", validation_sampler="dpm_fast")


def test_evaluation_draws_with_the_apps_textual_inversions(tiny_models, tmp_path, caplog):
    """`generate.embeddings` are loaded for evaluation as `kshd generate` loads them: an
    EasyNegative in the negative prompt is its vectors in both, not three words."""
    from safetensors.torch import save_file

    from kshd.stages.evaluate import app_encoder

    pipe = _pipe(tiny_models["sd"])
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    ti = tmp_path / "EasyNegative.safetensors"
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(3)) * 5
    save_file({"emb_params": vectors}, str(ti))
    negative = "EasyNegative, lowres"
    s = _settings(negative_prompt=negative)
    as_words = np.asarray(sample(pipe, [PROMPT], s, None, "base")[0][0], dtype=np.int16)

    missing = str(tmp_path / "absent.safetensors")
    encoder, identity = app_encoder(pipe, {"EasyNegative": str(ti), "Absent": missing}, 1)
    assert encoder.vectors == {"EasyNegative": 2}
    assert list(identity) == ["EasyNegative"]  # the base images' cache key holds the file
    assert "absent.safetensors not found" in caplog.text
    drawn = np.asarray(sample(pipe, [PROMPT], s, None, "base", encoder)[0][0], dtype=np.int16)
    app = _app_image(tiny_models["sd"], negative=negative, embeddings=(("EasyNegative", str(ti)),))
    assert np.array_equal(drawn, app)
    assert np.abs(drawn - as_words).mean() > 0.1  # the embedding changed the picture
