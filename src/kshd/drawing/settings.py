"""The `generate` config group (conf/generate/) and what it gives the engine and a request."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from kshd.config.schema_generate import GenerateSettings
from kshd.config.schema_model import ModelSettings
from kshd.drawing.engine import EngineSettings
from kshd.drawing.request import Request, conf_value

log = logging.getLogger(__name__)


def generate_settings(cfg: DictConfig) -> GenerateSettings:
    from kshd.config.fill import settings

    return settings(cfg.generate, GenerateSettings, "generate")


def engine_settings(cfg: DictConfig, lora: str | None = None) -> EngineSettings:
    """`lora` given on the command line must exist; the configured default may be missing."""
    from kshd.config.fill import settings

    g = generate_settings(cfg)
    m = settings(cfg.model, ModelSettings, "model")
    chosen = lora if lora is not None else g.lora
    if chosen and lora is None and not Path(chosen).exists():
        log.warning(
            "no LoRA at %s (generate.lora): drawing with the base model alone. Train one with "
            "`dvc repro` (or `make demo`), or name one with --lora.",
            chosen,
        )
        chosen = None
    return EngineSettings(
        pretrained=m.pretrained,
        revision=m.revision,
        variant=m.variant,
        single_file_config=m.single_file_config,
        lora=chosen or None,
        embeddings=tuple((str(k), str(v)) for k, v in (g.embeddings or {}).items()),
        device=g.device,
        attention_slicing=g.attention_slicing,
        vae_tiling=g.vae_tiling,
        outputs_dir=g.outputs_dir,
        limits=g.limits,
        control_models=dict(g.control.models),
        inpaint_model=g.inpaint.model,
        prediction_type=m.prediction_type,
        zero_terminal_snr=m.zero_terminal_snr,
        guidance_rescale=g.guidance_rescale,
    )


def default_request(cfg: DictConfig, prompt: str = "", **changes) -> Request:
    """A request with every field from `generate.*`, then `changes` (None = keep the default)."""
    from dataclasses import fields

    g = generate_settings(cfg)
    values = {}
    for f in fields(Request):
        try:
            values[f.name] = conf_value(g, f.name)
        except AttributeError:
            continue  # the prompt and the pictures: not settings
    req = Request(**{**values, "prompt": prompt})
    for key, value in changes.items():
        if value is not None:
            setattr(req, key, value)
    return req
