"""The tiny models' shared parts: a vision and a text tower's sizes, the VAE, the native size."""

from __future__ import annotations

# One tiny vision transformer: CLIP's image tower and the DINO stand-in.
TINY_VIT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


# One tiny CLIP text tower (SD's text encoder, CLIP's text side) over CLIP's real vocabulary,
# with the special-token ids of openai/clip-vit-large-patch14's config (as SD 1.x's).
TINY_CLIP_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    max_position_embeddings=77,
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)


# The tiny SD's native size (the UNet's sample_size times the VAE's 8): its pipelines' default.
TINY_SD_RESOLUTION = 128


def tiny_vae():
    """Four blocks, like SD's VAE: it downsamples by 8, so latents have SD's proportions."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[4, 8, 16, 16],
        layers_per_block=1,
        norm_num_groups=4,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )
