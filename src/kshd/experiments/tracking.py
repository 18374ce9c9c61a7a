"""wandb tracking: offline unless a key is set, never blocking, one run per experiment and stage."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from kshd.config.schema import TrackingSettings
from kshd.config.values import TRACKING_MODES as MODES

log = logging.getLogger(__name__)

# Key names that hold credentials (`hf_token`, `WANDB_API_KEY`, `password`), not `max_new_tokens`.
SECRET_KEY = re.compile(r"(^|[_.-])(token|api_?key|password|passwd|secret|auth)$", re.IGNORECASE)
# Environment variables whose values must never be written anywhere.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "KSHD_GUI_AUTH")
REDACTED = "<redacted>"


def resolve_mode(mode: str, env: Mapping[str, str] = os.environ) -> str:
    """An explicit mode wins; auto -> WANDB_MODE if set, else online only with WANDB_API_KEY."""
    if mode not in MODES:
        raise ValueError(f"config key `tracking.mode` = {mode!r}: expected one of {MODES}")
    if mode != "auto":
        return mode
    if env.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return env["WANDB_MODE"]
    return "online" if env.get("WANDB_API_KEY") else "offline"


def scrub(config: Mapping, env: Mapping[str, str] = os.environ) -> dict:
    """Drop secret-named keys and redact the values of secret variables (`SECRET_ENV`)."""
    secrets = {env[k] for k in SECRET_ENV if len(env.get(k) or "") >= 4}

    def clean(value):
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if not SECRET_KEY.search(str(k))}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, str) and any(secret in value for secret in secrets):
            return REDACTED
        return value

    return clean(config)


def sweep_group(settings: TrackingSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """`tracking.group`, else `WANDB_RUN_GROUP`, else the commit the DVC experiments start from.

    Every experiment queued from one commit (`dvc exp run --queue -S ...`) shares
    `DVC_EXP_BASELINE_REV`, so a sweep lands in one wandb group without naming it.
    """
    if settings.group:
        return settings.group
    if env.get("WANDB_RUN_GROUP"):
        return env["WANDB_RUN_GROUP"]
    rev = env.get("DVC_EXP_BASELINE_REV")
    return f"baseline-{rev[:7]}" if rev else None


def run_id(name: str | None, job_type: str, group: str | None, config: Mapping) -> str | None:
    """The same experiment, stage and params -> the same wandb run (a re-run resumes it).

    A stage killed and run again under the same experiment name continues its run instead of
    leaving two; the same name with other params (`dvc exp run -n x -f`) is a new run.
    """
    if not name:
        return None
    key = json.dumps([name, job_type, group, config], sort_keys=True, default=str)
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:40]
    return f"{safe}-{job_type}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def start_run(settings: TrackingSettings, job_type: str, config: Mapping):
    """A wandb run named after the DVC experiment, or None when tracking is off."""
    if not settings.enabled:
        return None
    mode = resolve_mode(settings.mode)
    if mode == "disabled":
        return None
    import wandb

    # A queued experiment runs in a temporary copy that DVC deletes afterwards: keep the runs in
    # the project itself (DVC_ROOT names it), where `wandb sync` finds them.
    run_dir = Path(os.environ.get("DVC_ROOT") or ".", settings.dir or ".").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    name = os.environ.get("DVC_EXP_NAME") or None
    group = sweep_group(settings)
    clean = scrub(config)
    kwargs = dict(
        project=settings.project,
        entity=settings.entity,
        group=group,
        name=name,
        id=run_id(name, job_type, group, clean),
        resume="allow",
        job_type=job_type,
        config=clean,
        dir=str(run_dir),
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, console="off", init_timeout=60),
    )
    try:
        run = wandb.init(mode=mode, **kwargs)
    except Exception as err:  # an unreachable or refusing server must not cost the training
        if mode != "online":
            raise
        log.warning("wandb online failed (%s); logging offline, `wandb sync` uploads later", err)
        mode, run = "offline", wandb.init(mode="offline", **kwargs)
    log.info("wandb %s run %s (%s) in %s", mode, run.name, job_type, run_dir)
    return run
