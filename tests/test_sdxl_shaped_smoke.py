"""SDXL's shapes, not the tiny SDXL's: a few LoRA steps and one drawing at 256 px.

Random weights (nothing downloaded): SDXL base's 2.6 G-parameter UNet and VAE, both text
encoders at their real widths (768 and 1280) but two layers deep to stay quick. fp32 on the CPU,
no gradient checkpointing (its recomputation doubled the time here; its path is the same as SD
1.x's): about 55 s on 2 cores (the UNet's random weights 7 s of it; torch's own init took 25 s).
`make gpu-check SDXL=1` runs fp16 and bf16 at 1024 px where a GPU is lent.
"""

from __future__ import annotations

import pytest

from kshd.config.compose import defaults

from .helpers.settings import assert_trains_and_draws


@pytest.mark.slow
@pytest.mark.xdist_group("memory")  # SDXL's 2.6 G-parameter UNet in fp32: many GB
def test_sdxl_shaped_pipeline_trains_and_draws_at_256_px(tiny_models, sample_split, tmp_path):
    from transformers import CLIPTokenizer

    from kshd_world.sdxl_shaped import sdxl_shaped_components

    tokenizer = CLIPTokenizer.from_pretrained(tiny_models["sd"], subfolder="tokenizer")
    c = sdxl_shaped_components(tokenizer, seed=0, text_layers=2)
    widths = c.text_encoder.config.hidden_size + c.text_encoder_2.config.hidden_size
    assert c.unet.config.cross_attention_dim == widths == 2048
    assert sum(p.numel() for p in c.unet.parameters()) > 2.5e9  # SDXL's UNet, not a toy
    s = defaults("train", resolution=256, center_crop=True, batch_size=1, max_train_steps=2,
                 learning_rate=1e-4, seed=1)  # fmt: skip
    # drawn as validation draws: both encoders, the pooled text and the size conditioning
    assert_trains_and_draws(c, sample_split.select(range(2)), s, tmp_path, 256, draw_steps=1)
