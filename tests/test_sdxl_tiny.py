"""The tiny SDXL: SDXL's shape built locally with CLIP's
real tokenizer for both encoders, saved and loaded through `from_pretrained`, drawing; and the
model family read from the model, never typed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kshd.models.family import SD1, SDXL, model_family

pytestmark = pytest.mark.slow


def test_the_tiny_sdxl_loads_through_from_pretrained_and_draws(tiny_models):
    from diffusers import StableDiffusionXLPipeline

    folder = tiny_models["sdxl"]
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, use_safetensors=True)
    ids = pipe.tokenizer("a photo of a cat").input_ids
    assert (
        ids
        == [49406, 320, 1125, 539, 320, 2368, 49407]
        == pipe.tokenizer_2("a photo of a cat").input_ids
    )
    widths = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == widths  # both encoders' states, side by side
    assert pipe.unet.config.addition_embed_type == "text_time"
    embeds = pipe.encode_prompt("an anime girl", device="cpu", do_classifier_free_guidance=False)
    assert embeds[0].shape[-1] == widths and embeds[2].shape[-1] == 32  # the pooled text_embeds
    out = pipe("an anime girl", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip
    assert out.shape == (64, 64, 3) and np.isfinite(out).all() and out.std() > 0


def test_the_family_is_read_from_the_model(tiny_models, tmp_path):
    assert model_family(tiny_models["sd"]) == SD1
    assert model_family(tiny_models["sdxl"]) == SDXL
    assert model_family(str(tiny_models["sd-inpaint"])) == SD1
