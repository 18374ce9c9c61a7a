"""Drawing as the app (`kshd generate`) draws, for evaluation and validation samples.

A1111 prompt syntax and 75-token chunks through PromptEncoder, the prefixes joined as the app
joins them, the app's sampler: so a metric or a validation grid shows what a user gets for the
same prompt, seed and settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch
from PIL import Image
from tqdm import tqdm

from kshd.config.fill import DEFINES_RESULT
from kshd.config.values import SAMPLERS, check_sampler
from kshd.prompts.encoding import join_prefix

if TYPE_CHECKING:
    from kshd.config.schema_evaluate import EvaluateSettings


# Validation samples use diffusers' pipeline default CFG, as the reference training script does.
VALIDATION_GUIDANCE = 7.5


@dataclass(frozen=True)
class SampleSettings:
    """How samples are drawn (the evaluation's and the training's validation images);
    DEFINES_RESULT marks what the base model's images depend on.

    No defaults: `from_settings` fills it from the `evaluate` group, `validation_images` from
    the training's validation settings."""

    prompts: tuple[str, ...] = field(metadata=DEFINES_RESULT)
    negative_prompt: str = field(metadata=DEFINES_RESULT)
    seeds: tuple[int, ...] = field(metadata=DEFINES_RESULT)
    num_inference_steps: int = field(metadata=DEFINES_RESULT)
    guidance_scale: float = field(metadata=DEFINES_RESULT)
    resolution: int = field(metadata=DEFINES_RESULT)
    lora_scales: tuple[float, ...]  # the last one is the headline
    trigger_phrase: str
    # joined before each prompt as the app joins generate's
    positive_prefix: str = field(metadata=DEFINES_RESULT)
    negative_prefix: str = field(metadata=DEFINES_RESULT)
    # a key of drawing.request.SAMPLERS; "" = the pipeline's scheduler
    sampler: str = field(metadata=DEFINES_RESULT)

    def __post_init__(self) -> None:
        check_sampler(self.sampler, "evaluate.sampler")

    @classmethod
    def from_settings(cls, evaluate: EvaluateSettings, trigger_phrase: str) -> SampleSettings:
        """The `evaluate` group's fields of the same names, with the caption group's trigger
        phrase (stripped for the no-trigger row)."""
        keep = {f.name for f in fields(cls)} - {"trigger_phrase"}
        return cls(trigger_phrase=trigger_phrase, **{k: getattr(evaluate, k) for k in keep})


Images = list[list[Image.Image]]  # [prompt][seed]


_WEIGHTED = re.compile(r"^[(\[\s]*(.*?)\s*(?::\s*[+-]?[.\d]+)?[)\]\s]*$")


def strip_trigger(prompt: str, trigger: str) -> str:
    """The prompt as a user would say it without the style: trigger and its comma removed,
    also when weighted as the app's prefix writes it, `(trigger : 1.5)`."""
    if not trigger:
        return prompt
    parts = [p.strip() for p in prompt.split(",")]
    kept = [p for p in parts if p and _WEIGHTED.match(p).group(1) != trigger]
    return ", ".join(kept) or prompt


def use_sampler(pipe, key: str, base_config=None) -> None:
    """The app's scheduler for a sampler key, built from the model's config as the app does."""
    if not key:
        return
    import diffusers

    _, cls, options = SAMPLERS[key]
    config = base_config or pipe.scheduler.config
    pipe.scheduler = getattr(diffusers, cls).from_config(config, **options)


def prompt_pair(encoder, prompt: str, s: SampleSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The app's embeddings of a prompt and the negative prompt, prefixes joined as the app's."""

    return encoder.encode_pair(
        join_prefix(s.positive_prefix, prompt), join_prefix(s.negative_prefix, s.negative_prompt)
    )


def scaled_pair(pipe, encoder, prompt: str, s: SampleSettings, lora_scale: float | None):
    """The prompt pair with a text-encoder LoRA at the strength asked, as the app merges it
    (cross_attention_kwargs reaches the UNet alone)."""
    from diffusers.utils import scale_lora_layers, unscale_lora_layers

    if lora_scale is None:
        return prompt_pair(encoder, prompt, s)
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e]
    for encoder_model in encoders:
        scale_lora_layers(encoder_model, lora_scale)
    try:
        return prompt_pair(encoder, prompt, s)
    finally:
        for encoder_model in encoders:
            unscale_lora_layers(encoder_model, lora_scale)


def sample(
    pipe,
    prompts: Sequence[str],
    s: SampleSettings,
    lora_scale: float | None,
    label: str,
    encoder=None,
) -> Images:
    """images[prompt][seed], all seeds of a prompt in one batch; None = the base model alone."""
    from kshd.prompts.sdxl import pipe_embeds, prompt_encoder

    encoder = encoder or prompt_encoder(pipe)
    kwargs = {} if lora_scale is None else {"cross_attention_kwargs": {"scale": lora_scale}}
    out = []
    bar = tqdm(total=len(prompts) * len(s.seeds), desc=label, unit="img")
    for prompt in prompts:
        pos, neg = scaled_pair(pipe, encoder, prompt, s, lora_scale)
        result = pipe(
            **pipe_embeds(pos, neg, len(s.seeds)),
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            height=s.resolution,
            width=s.resolution,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in s.seeds],
            **kwargs,
        )
        out.append(result.images)
        bar.update(len(s.seeds))
    bar.close()
    return out


def validation_images(
    c,
    prompt: str,
    negative: str,
    seeds: tuple[int, ...],
    steps: int,
    resolution: int,
    *,
    positive_prefix: str,
    negative_prefix: str,
    sampler: str,
) -> list[Image.Image]:
    """Sample from the components being trained as the app would draw the prompt, with its
    prefixes, sampler ("" = DPM-Solver++) and the base's clip skip; the base is not drawn (no
    LoRA scale)."""
    from diffusers import DPMSolverMultistepScheduler

    from kshd.models.loading import pipeline_from_parts
    from kshd.prompts.sdxl import prompt_encoder

    scheduler = DPMSolverMultistepScheduler.from_config(c.noise_scheduler.config)
    pipe = pipeline_from_parts(
        c.vae, c.text_encoder, c.tokenizer, c.unet, scheduler, c.text_encoder_2, c.tokenizer_2
    )
    s = SampleSettings(
        prompts=(prompt,),
        negative_prompt=negative,
        seeds=tuple(seeds),
        num_inference_steps=steps,
        guidance_scale=VALIDATION_GUIDANCE,
        resolution=resolution,
        lora_scales=(1.0,),
        trigger_phrase="",
        positive_prefix=positive_prefix,
        negative_prefix=negative_prefix,
        sampler=sampler,
    )
    use_sampler(pipe, s.sampler, c.noise_scheduler.config)
    with torch.no_grad():
        encoder = prompt_encoder(pipe, clip_skip=c.clip_skip)
        return sample(pipe, s.prompts, s, None, "validation", encoder)[0]


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Rows of equally sized images pasted into one picture."""
    w, h = rows[0][0].size
    canvas = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            canvas.paste(img, (x * w, y * h))
    return canvas
