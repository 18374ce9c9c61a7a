"""Text-encoder LoRA in the app: loaded from both file formats and merged at the strength asked."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from kshd.adapters.files import KOHYA_FILE
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request

from .helpers.lora_files import make_adapter, randomize_lora_b, tiny_info
from .helpers.settings import sample_settings

SMALL = dict(
    steps=3, width=64, height=64, sampler="euler", seed=7, positive_prefix="", negative_prefix=""
)
PROMPT = "an anime girl, drawn by KSH drawing style"


@pytest.fixture(scope="module")
def te_lora(tiny_models, tmp_path_factory):
    """A LoRA for the tiny SD whose only part is a random (non-zero) text-encoder adapter."""
    from transformers import CLIPTextModel

    from kshd.adapters.files import save_adapter

    out = tmp_path_factory.mktemp("te_lora")
    te = CLIPTextModel.from_pretrained(tiny_models["sd"], subfolder="text_encoder")
    lora = make_adapter(
        4, 4, text_encoder_target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]
    )
    lora.inject(te, text_encoder=True)
    randomize_lora_b(te, seed=2, scale=0.5)
    state = lora.tensors(None, te)
    assert state and all(k.startswith("text_encoder.") for k in state)
    save_adapter(out, lora, tiny_info(train_text_encoder=True), None, te)
    return out


@pytest.fixture(scope="module")
def settings(tiny_models, te_lora, tmp_path_factory):
    return EngineSettings(
        str(tiny_models["sd"]), lora=str(te_lora), outputs_dir="unused", device="cpu"
    )


@pytest.fixture(scope="module")
def engine(settings):
    return Engine(settings)


def _pixels(engine: Engine, **kw) -> np.ndarray:
    req = Request(**{"prompt": PROMPT, **SMALL, **kw})
    return np.asarray(engine.generate(req, save=False).images[0]).astype(int)


def _te_weights(engine: Engine) -> dict[str, torch.Tensor]:
    """The text encoder's own weights (a LoRA-wrapped layer's under its plain name)."""
    state = engine.txt2img.text_encoder.state_dict()
    return {k.replace(".base_layer", ""): v.clone() for k, v in state.items() if "lora_" not in k}


def test_kohya_file_has_sd1_text_encoder_keys(te_lora):
    with safe_open(str(te_lora / KOHYA_FILE), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert all(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)


def test_strength_scales_the_text_encoder_and_zero_is_the_base_exactly(engine, settings):
    base = Engine(replace(settings, lora=None))
    reference = _pixels(base, lora_scale=1.0)
    base_te = _te_weights(base)
    full = _pixels(engine, lora_scale=1.0)
    assert np.abs(full - reference).mean() > 1  # the text-encoder LoRA changes the drawing
    assert np.array_equal(_pixels(engine, lora_scale=0.0), reference)
    zero = _te_weights(engine)
    assert zero.keys() == base_te.keys()
    assert all(torch.equal(zero[k], v) for k, v in base_te.items())


def test_merged_text_encoder_equals_peft_at_the_same_strength(engine, settings):
    from diffusers import StableDiffusionPipeline
    from peft.tuners.lora import LoraLayer

    pipe = StableDiffusionPipeline.from_pretrained(settings.pretrained, safety_checker=None)
    pipe.load_lora_weights(settings.lora, adapter_name="x")
    for module in pipe.text_encoder.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("x", 0.7)
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt")
    engine.set_lora_scale(0.7)
    with torch.no_grad():
        unfused = pipe.text_encoder(ids.input_ids)[0]
        fused = engine.txt2img.text_encoder(ids.input_ids)[0]
        engine.set_lora_scale(0.0)
        plain = engine.txt2img.text_encoder(ids.input_ids)[0]
    assert (unfused - plain).abs().max() > 1e-3
    assert torch.allclose(fused, unfused, atol=1e-5)  # the strength scales the TE's delta


def test_kohya_file_draws_like_the_diffusers_file(settings, engine, te_lora):
    kohya = Engine(replace(settings, lora=str(te_lora / KOHYA_FILE)))
    assert np.abs(_pixels(kohya, lora_scale=0.8) - _pixels(engine, lora_scale=0.8)).max() <= 1


def test_resume_restores_the_text_encoder_lora(tiny_models, sample_split, tmp_path):
    from kshd.adapters.registry import build_adapter
    from kshd.config.compose import defaults
    from kshd.training.components import load_components
    from kshd.training.loop import CheckpointPolicy, train_lora

    s = defaults(
        "train",
        resolution=64,
        batch_size=2,
        epochs=2,
        learning_rate=1e-2,
        seed=5,
        train_text_encoder=True,
    )

    def run():
        c = load_components(str(tiny_models["sd"]))
        result = train_lora(
            c, sample_split, s, ckpt=CheckpointPolicy(tmp_path, 4, None, True, "te")
        )
        return result, build_adapter(s.adapter, s.rank, s.alpha).tensors(c.unet, c.text_encoder)

    straight, expected = run()
    assert straight.resumed_from is None and straight.steps == 10
    resumed, got = run()  # the newest checkpoint is step 8: two steps left
    assert resumed.resumed_from == "checkpoint-8"
    te = [k for k in expected if k.startswith("text_encoder.") and "lora_B" in k]
    assert te and all(expected[k].abs().max() > 0 for k in te)  # the text encoder did train
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)


def test_evaluation_scales_the_text_encoder_lora_as_the_app(tiny_models, te_lora, engine):
    """At a strength below 1 the evaluation's text encoder follows it too, as the app's merge."""
    from kshd.evaluation.sampling import sample, use_sampler
    from kshd.models.loading import load_sd_pipeline

    pipe = load_sd_pipeline(str(tiny_models["sd"]), None, None, torch.device("cpu"), torch.float32)
    use_sampler(pipe, "euler")
    pipe.load_lora_weights(str(te_lora), use_safetensors=True)
    s = sample_settings(
        prompts=(PROMPT,), negative_prompt="", seeds=(7,), num_inference_steps=3,
        guidance_scale=7.5, resolution=64, positive_prefix="", negative_prefix="", sampler="euler",
    )  # fmt: skip
    app = dict(negative_prompt="", positive_prefix="", negative_prefix="", lora_scale=0.5)
    drawn = np.asarray(sample(pipe, [PROMPT], s, 0.5, "LoRA x0.5")[0][0]).astype(int)
    assert np.abs(drawn - _pixels(engine, **app)).max() <= 2
    assert np.abs(drawn - _pixels(engine, **{**app, "lora_scale": 1.0})).mean() > 1
