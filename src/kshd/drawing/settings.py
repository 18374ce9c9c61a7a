"""From the `generate` and `model` config groups to engine settings and request defaults."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from kshd.drawing.engine import EngineSettings
from kshd.drawing.request import Limits, Request

log = logging.getLogger(__name__)


def engine_settings(cfg: DictConfig, lora: str | None = None) -> EngineSettings:
    """`lora` given on the command line must exist; the configured default may be missing."""
    g = cfg.generate
    chosen = lora if lora is not None else g.lora
    if chosen and lora is None and not Path(chosen).exists():
        log.warning(
            "no LoRA at %s (generate.lora): drawing with the base model alone. Train one with "
            "`dvc repro` (or `make demo`), or name one with --lora.",
            chosen,
        )
        chosen = None
    limits = {k: v for k, v in g.limits.items() if k in Limits.__dataclass_fields__}
    return EngineSettings(
        pretrained=cfg.model.pretrained,
        revision=cfg.model.revision,
        variant=cfg.model.variant,
        lora=chosen or None,
        embeddings=tuple((str(k), str(v)) for k, v in (g.embeddings or {}).items()),
        device=g.device,
        attention_slicing=g.attention_slicing,
        vae_tiling=g.vae_tiling,
        outputs_dir=g.outputs_dir,
        limits=Limits(**limits),
    )


def default_request(cfg: DictConfig, prompt: str = "", **changes) -> Request:
    """A request with every field from `generate.*`, then `changes` (None = keep the default)."""
    g = cfg.generate
    req = Request(
        prompt=prompt,
        negative_prompt=g.negative_prompt,
        positive_prefix=g.positive_prefix,
        negative_prefix=g.negative_prefix,
        sampler=g.sampler,
        steps=g.steps,
        cfg_scale=g.guidance_scale,
        seed=g.seed,
        width=g.width,
        height=g.height,
        batch_count=g.batch_count,
        batch_size=g.batch_size,
        lora_scale=g.lora_scale,
        strength=g.strength,
        resize_mode=g.resize_mode,
    )
    for key, value in changes.items():
        if value is not None:
            setattr(req, key, value)
    return req
