"""Fixed-seed samples with and without the LoRA, a grid per prompt, and numbers to compare runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    prompts: tuple[str, ...]
    negative_prompt: str = ""
    seeds: tuple[int, ...] = (0,)
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    resolution: int = 512
    lora_scale: float = 1.0


def sample(pipe, s: EvalSettings, lora_scale: float | None) -> list[list[Image.Image]]:
    """images[prompt][seed]; lora_scale None means the base model alone."""
    kwargs = {} if lora_scale is None else {"cross_attention_kwargs": {"scale": lora_scale}}
    out = []
    for prompt in tqdm(
        s.prompts, desc="evaluate" if lora_scale is not None else "base", unit="prompt"
    ):
        gens = [torch.Generator("cpu").manual_seed(seed) for seed in s.seeds]
        result = pipe(
            [prompt] * len(s.seeds),
            negative_prompt=[s.negative_prompt] * len(s.seeds),
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            height=s.resolution,
            width=s.resolution,
            generator=gens,
            **kwargs,
        )
        out.append(result.images)
    return out


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Rows of equally sized images pasted into one picture."""
    w, h = rows[0][0].size
    canvas = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            canvas.paste(img, (x * w, y * h))
    return canvas


def mean_abs_difference(a: list[list[Image.Image]], b: list[list[Image.Image]]) -> float:
    """Mean absolute pixel difference in [0, 1]: 0 when the LoRA changes nothing."""
    diffs = [
        np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).mean() / 255.0
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    ]
    return float(np.mean(diffs))


def evaluate_lora(pipe, lora_dir: Path, s: EvalSettings, out_dir: Path) -> dict:
    """Sample the base model, load the LoRA, sample again; save grids; return metrics."""
    base = sample(pipe, s, None)
    pipe.load_lora_weights(str(lora_dir))
    tuned = sample(pipe, s, s.lora_scale)
    grids_dir = out_dir / "grids"
    grids_dir.mkdir(parents=True, exist_ok=True)
    for i, (b_row, t_row) in enumerate(zip(base, tuned, strict=True)):
        grid([b_row, t_row]).save(grids_dir / f"prompt-{i:02d}.png")
    metrics = {
        "num_prompts": len(s.prompts),
        "num_images": len(s.prompts) * len(s.seeds),
        "lora_pixel_delta": round(mean_abs_difference(base, tuned), 6),
    }
    log.info("evaluate: %s", metrics)
    return metrics


def validation_images(
    c, prompt: str, negative: str, seeds: tuple[int, ...], steps: int, resolution: int
) -> list[Image.Image]:
    """Sample from the components being trained (a DPM-Solver++ pipeline around them)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(c.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    with torch.no_grad():
        return pipe(
            [prompt] * len(seeds),
            negative_prompt=[negative] * len(seeds),
            num_inference_steps=steps,
            height=resolution,
            width=resolution,
            generator=gens,
        ).images
