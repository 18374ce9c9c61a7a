"""A tiny SDXL pipeline for offline tests: SDXL's shape at a toy size.

Two CLIP text encoders over CLIP's real tokenizer (the second with a projection, whose pooled
output is SDXL's `text_embeds`), their hidden states concatenated for the UNet's cross-attention
(32 + 48 = 80 wide, SDXL's 768 + 1280: unequal, as diffusers' single-file loader tells the two
apart by width), and a UNet conditioned on the pooled text and the six
size numbers (`addition_embed_type="text_time"`), as diffusers' own SDXL tests build it. Saved
with `save_pretrained` and loaded back through `from_pretrained`, like the tiny SD 1.x.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kshd_world.tiny_parts import TINY_CLIP_TEXT, TINY_SD_RESOLUTION, tiny_vae

TIME_EMBED = 8  # addition_time_embed_dim: each of the six size numbers' embedding width
TEXT_WIDTH = 32  # the first text encoder's width (and the second's projection)
TEXT_WIDTH_2 = 48  # the second's
# stabilityai/stable-diffusion-xl-base-1.0's scheduler: SD 1.5's betas, Euler, leading spacing
SDXL_SCHEDULE = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    timestep_spacing="leading",
)


def _tiny_sdxl_unet(sample_size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_WIDTH,
        cross_attention_dim=TEXT_WIDTH + TEXT_WIDTH_2,
    )


def build_tiny_sdxl(out_dir: Path, seed: int) -> None:
    """The tiny SDXL folder (diffusers layout, safetensors), CLIP's BPE files for both."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from kshd_world.clip_bpe import clip_bpe_tokenizer, write_clip_bpe_files

    tokenizer = clip_bpe_tokenizer()
    config = dict(TINY_CLIP_TEXT, hidden_size=TEXT_WIDTH, num_hidden_layers=5,
                  vocab_size=len(tokenizer))  # fmt: skip
    torch.manual_seed(seed)
    unet = _tiny_sdxl_unet(TINY_SD_RESOLUTION // 8)
    torch.manual_seed(seed)
    vae = tiny_vae()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**config))
    torch.manual_seed(seed + 1)
    config_2 = config | {"hidden_size": TEXT_WIDTH_2, "intermediate_size": 53}
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config_2, projection_dim=32))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULE),
    )  # fmt: skip
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for folder in ("tokenizer", "tokenizer_2"):
        write_clip_bpe_files(out_dir / folder)
