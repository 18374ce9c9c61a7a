"""wandb tracking: offline unless a key is present, never blocking, one run per stage execution."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
SECRET_MARKERS = ("token", "api_key", "apikey", "password", "secret")


@dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = True
    mode: str = "auto"
    project: str = "ksh-drawing-ai"
    entity: str | None = None
    group: str | None = None
    dir: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping) -> TrackingSettings:
        return cls(**{k: v for k, v in dict(cfg).items() if k in cls.__dataclass_fields__})


def resolve_mode(mode: str, env: Mapping[str, str] = os.environ) -> str:
    """An explicit mode wins; auto -> WANDB_MODE if set, else online only with WANDB_API_KEY."""
    if mode not in MODES:
        raise ValueError(f"config key `tracking.mode` = {mode!r}: expected one of {MODES}")
    if mode != "auto":
        return mode
    if env.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return env["WANDB_MODE"]
    return "online" if env.get("WANDB_API_KEY") else "offline"


def scrub(config: Mapping) -> dict:
    """Drop anything that looks like a secret before it reaches wandb's config."""
    out = {}
    for key, value in config.items():
        if any(m in str(key).lower() for m in SECRET_MARKERS):
            continue
        out[key] = scrub(value) if isinstance(value, Mapping) else value
    return out


def start_run(settings: TrackingSettings, job_type: str, config: Mapping):
    """A wandb run named after the DVC experiment, or None when tracking is off."""
    if not settings.enabled:
        return None
    mode = resolve_mode(settings.mode)
    if mode == "disabled":
        return None
    import wandb

    run_dir = Path(settings.dir or ".").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        name=os.environ.get("DVC_EXP_NAME") or None,
        job_type=job_type,
        config=scrub(config),
        dir=str(run_dir),
        mode=mode,
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, console="off", init_timeout=60),
    )
    log.info("wandb %s run %s (%s) in %s", mode, run.name, job_type, run_dir)
    return run
