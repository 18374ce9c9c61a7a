"""Thin entry points, one per DVC stage: `main(argv)` composes the config and calls the stage's
`run(cfg)`, which tests call in-process with a composed config (tests/conftest.py `demo_cfg`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from kshd.config import UserError, load_params


def stage_config(argv: Sequence[str] | None, stage: str) -> DictConfig:
    """Logging plus `params.yaml` composed with the command line's Hydra overrides, every group
    checked against the schema (kshd.schema) before the stage loads anything."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    overrides = list(sys.argv[1:] if argv is None else argv)
    cfg = load_params(overrides)
    logging.getLogger(f"kshd.stages.{stage}").info(
        "stage %s%s", stage, f" with overrides {overrides}" if overrides else ""
    )
    return cfg


def ensure_tiny(cfg: DictConfig) -> None:
    """The demo profile builds its tiny local models on first use (tiny.build)."""
    if cfg.tiny.build:
        from kshd.builders.tiny import build_tiny_models

        build_tiny_models(cfg.tiny.dir, cfg.tiny.seed)


def plain(cfg: DictConfig, keys: Sequence[str] | None = None) -> dict:
    """The named top-level groups (default: all, the experiment's full params) as plain dicts."""
    full = OmegaConf.to_container(cfg, resolve=True)
    return {k: full[k] for k in (keys or full)}


def entry(main: Callable[[], None], stage: str) -> None:
    """A stage's `__main__`: errors in config, inputs or disk space exit 2 with one line."""
    try:
        main()
    except (UserError, FileNotFoundError) as err:  # a missing file is named in the message
        logging.getLogger(f"kshd.stages.{stage}").error("%s: %s", type(err).__name__, err)
        sys.exit(2)
