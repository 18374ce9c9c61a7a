"""LoHa, LoKr and DoRA on an SDXL base: each trains through the loop on the tiny SDXL's UNet and
both text encoders, its kohya file names the UNet's modules by their SGM blocks and the
encoders `lora_te1_` / `lora_te2_` as kohya's sdxl_train_network.py does, every key maps under
ComfyUI's and A1111's SDXL rules, and the file draws what was trained; in the app's engine at
strength 0 the base exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.adapters.weights import open_weights
from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request
from kshd.training.components import load_components
from kshd.training.loop import train_lora

from .helpers.lora_files import tiny_info
from .helpers.ui_keys import unread
from .test_adapters_lycoris import ALGO, KINDS, RANKS, adapter_node

pytestmark = pytest.mark.slow
DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip


@pytest.fixture(scope="module", params=sorted(KINDS))
def trained_sdxl(request, tiny_models, sample_split, tmp_path_factory):
    """(kind, trained components, adapter folder): 5 steps on the tiny SDXL, both encoders."""
    kind = request.param
    s = defaults("train", resolution=64, batch_size=2, epochs=1, learning_rate=5e-2, seed=3,
                 rank=RANKS[kind], alpha=2, train_text_encoder=True,
                 adapter=adapter_node(kind))  # fmt: skip
    c = load_components(str(tiny_models["sdxl"]))
    result = train_lora(c, sample_split, s)
    folder = tmp_path_factory.mktemp(f"sdxl-{kind}") / "lora"
    info = tiny_info(base_model="tiny-sdxl", steps=result.steps, train_text_encoder=True,
                     sdxl=True)  # fmt: skip
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    save_adapter(folder, adapter, info, c.unet, c.text_encoder, c.text_encoder_2)
    return kind, c, folder


def test_the_sdxl_file_has_kohya_s_sdxl_names_and_maps_under_comfyui_and_a1111(
    trained_sdxl, tiny_models
):
    kind, _, folder = trained_sdxl
    with safe_open(str(folder / KOHYA_FILE), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()  # noqa: SIM118 (not a dict)
    assert not (folder / DIFFUSERS_FILE).exists()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert json.loads(meta["ss_network_args"])["algo"] == ALGO[kind]
    modules = {k.partition(".")[0] for k in keys}
    for prefix in ("lora_te1_text_model_encoder_layers_", "lora_te2_text_model_encoder_layers_"):
        assert any(m.startswith(prefix) for m in modules), prefix
    unet = {m for m in modules if m.startswith("lora_unet_")}
    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    assert unet and all(m.startswith(sgm) for m in unet), sorted(unet)[:3]
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in unet
    assert "lora_unet_input_blocks_1_0_in_layers_2" in unet  # a ResNet's 3x3 conv1
    for app in ("comfyui", "a1111"):
        assert unread(keys, tiny_models["sdxl"], True, app) == [], app


def _draw(pipe) -> np.ndarray:
    return pipe("an anime girl", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip


def test_the_sdxl_file_draws_what_was_trained_and_the_engine_the_base_at_zero(
    trained_sdxl, tiny_models, tmp_path
):
    from diffusers import StableDiffusionXLPipeline

    kind, c, folder = trained_sdxl
    for model in (c.unet, c.text_encoder, c.text_encoder_2):
        model.eval()
    sdxl = str(tiny_models["sdxl"])
    parts = dict(unet=c.unet, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2)
    trained = StableDiffusionXLPipeline.from_pretrained(sdxl, **parts)
    tuned = _draw(trained)
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl)
    base = _draw(pipe)
    weights = open_weights(folder)
    assert weights.adapter.kind == kind
    weights.attach(pipe, "ksh")
    assert np.abs(_draw(pipe) - tuned).max() < 1e-4
    assert np.abs(tuned - base).max() > 1e-3

    settings = EngineSettings(sdxl, lora=str(folder), device="cpu", outputs_dir=str(tmp_path),
                              limits=defaults("generate.limits"))  # fmt: skip
    plain = Engine(replace(settings, lora=None))
    base_pixels = np.asarray(plain.generate(Request("a girl", **DRAW), save=False).images[0])
    engine = Engine(settings)
    for scale, same in ((1.0, False), (0.0, True)):
        out = engine.generate(Request("a girl", lora_scale=scale, **DRAW), save=False)
        assert np.array_equal(np.asarray(out.images[0]), base_pixels) is same, scale
