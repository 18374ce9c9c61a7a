"""An SD 1.5-shaped pipeline with random weights: the real model's block sizes, built offline.

The tiny models are fast but their shapes are not SD's; this one has SD 1.5's UNet (320/640/1280/
1280, cross-attention 768, 8 attention heads), its VAE (128/256/512/512) and a CLIP text encoder
768 wide (12 layers as CLIP-L, fewer where a test must be quick). Used by the SD 1.5-shaped smoke
test, `bench/train.py` and `make gpu-check` (bench/gpu_check.py), never by users.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kshd.training.components import Components
from kshd_world.sd_folder import save_sd_pipeline, sd15_scheduler

log = logging.getLogger(__name__)

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    sample_size=64,
)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    sample_size=512,
)


def _text_encoder(tokenizer, layers: int):
    """CLIP-L's text tower (768 wide, 12 heads) with `layers` layers, over the tokenizer's ids."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=layers,
            num_attention_heads=12,
            max_position_embeddings=77,
            # openai/clip-vit-large-patch14's config values (as SD 1.x's): eos 2 selects
            # transformers' pooling at the highest token id, the end-of-text token
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    )


def sd15_shaped_components(tokenizer, seed: int = 0, text_layers: int = 12) -> Components:
    """The five parts in memory (random weights from `seed`), ready for `train_lora`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET)
    vae = AutoencoderKL(**SD15_VAE)
    text_encoder = _text_encoder(tokenizer, text_layers)
    return Components(tokenizer, text_encoder, vae, unet, sd15_scheduler())


def build_sd15_shaped(out_dir: Path, tokenizer, seed: int = 0, text_layers: int = 12) -> Path:
    """The same parts as a diffusers folder that `from_pretrained` loads (about 4 GB in fp32)."""
    c = sd15_shaped_components(tokenizer, seed, text_layers)
    save_sd_pipeline(out_dir, c.unet, c.vae, c.text_encoder, tokenizer)
    log.info("SD 1.5-shaped random-weight pipeline written to %s", out_dir)
    return out_dir
