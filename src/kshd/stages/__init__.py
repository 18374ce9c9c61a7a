"""Thin entry points, one per DVC stage: `main(argv)` composes the config and calls the stage's
`run(cfg: ProjectConfig)`, which tests call in-process with a composed config
(tests/conftest.py `demo_cfg`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kshd.config.compose import load_params, shared_path, value_at
from kshd.config.errors import UserError
from kshd.config.schema import ProjectConfig
from kshd.models.source import ModelSourceError, check_model_source


def stage_config(argv: Sequence[str] | None, stage: str) -> ProjectConfig:
    """Logging plus `params.yaml` composed with the command line's Hydra overrides, every group
    checked against the schema (kshd.config.schema) before the stage loads anything."""
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


# The config keys naming a model folder, Hub id or single file that a stage may load (the
# captioner's own keys are its `model_keys`, which the caption stage adds).
MODEL_KEYS = (
    "model.pretrained",
    "model.single_file_config",
    "evaluate.clip_model",
    "evaluate.dino_model",
    "evaluate.sketch.controlnet",
)


def workspace_model(name: str) -> str:
    """`name`, or the same relative folder in the workspace DVC names in `DVC_ROOT`: a queued
    experiment runs in a temporary copy without git-ignored folders such as `models/tiny/`
    (kshd.config.compose.shared_path, as for the caches)."""
    path = Path(name).expanduser()
    if not name or path.is_absolute() or path.exists():
        return name
    there = shared_path(path)  # DVC_ROOT's, else here (where it is missing)
    return str(there) if there.exists() else name  # a folder or a single .safetensors


def resolve_models(cfg: ProjectConfig, extra: Sequence[str] = ()) -> None:
    """Link each model key's (MODEL_KEYS and `extra`) relative folder that is missing here to the
    workspace's copy. The config keeps its value, so fingerprints, cache keys and the LoRA's
    metadata are those of a workspace run (a rewritten absolute path would miss the shared
    caption cache)."""
    for key in (*MODEL_KEYS, *extra):
        value = value_at(cfg, key)
        if isinstance(value, str) and (found := workspace_model(value)) != value:
            link = Path(value).expanduser()
            link.parent.mkdir(parents=True, exist_ok=True)
            # a git-ignored link in a temporary copy, never part of the experiment; the next
            # stage of the same copy finds it there
            with contextlib.suppress(FileExistsError):
                link.symlink_to(found, target_is_directory=Path(found).is_dir())


def require_model(cfg: ProjectConfig, key: str, marker: str = "config.json") -> None:
    """The model under `key` is a usable folder, cached or reachable; else one line naming the
    key and the way out. Stages never build models: `make demo` builds the demo's tiny ones."""
    name = value_at(cfg, key)
    revision = cfg.model.revision if key == "model.pretrained" else None
    try:
        check_model_source(name, key, marker, revision)
    except ModelSourceError:
        tiny = Path(cfg.tiny.dir)
        if not Path(name).exists() and Path(name).parent == tiny:
            raise ModelSourceError(
                f"{key}: {name} does not exist; run `make demo` (or `kshd tiny-models {tiny}`) "
                "to build the demo's tiny models."
            ) from None
        raise


def entry(main: Callable[[], None], stage: str) -> None:
    """A stage's `__main__`: errors in config, inputs or disk space exit 2 with one line."""
    try:
        main()
    except (UserError, FileNotFoundError) as err:  # a missing file is named in the message
        logging.getLogger(f"kshd.stages.{stage}").error("%s: %s", type(err).__name__, err)
        sys.exit(2)
