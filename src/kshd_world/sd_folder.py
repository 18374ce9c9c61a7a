"""SD 1.5's training noise schedule and an SD 1.x diffusers folder written from its parts.

Both builders of SD-shaped pipelines (the tiny one and the SD 1.5-shaped one) use them, so the
schedule is written once.
"""

from __future__ import annotations

from pathlib import Path

# runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json (as Anything V5's): the
# schedule SD 1.x was trained with, so LoRA training on random weights sees the real noise levels.
SD15_DDPM = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    steps_offset=1,
)


def sd15_scheduler():
    """A DDPM scheduler with SD 1.5's training schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD15_DDPM)


def save_sd_pipeline(out_dir: Path, unet, vae, text_encoder, tokenizer) -> None:
    """A diffusers SD 1.x folder (safetensors) from its parts, with SD 1.5's noise schedule."""
    from kshd.models.loading import pipeline_from_parts

    pipe = pipeline_from_parts(vae, text_encoder, tokenizer, unet, sd15_scheduler())
    pipe.save_pretrained(out_dir, safe_serialization=True)
