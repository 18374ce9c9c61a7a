"""Configuration: compose `params.yaml` (what DVC wrote from `conf/`) with command-line overrides.

Stages read `params.yaml` through Hydra's Compose API rather than `@hydra.main` over `conf/`:
`dvc exp run -S` rewrites `params.yaml`, so this is the file that holds an experiment's values,
and the Compose API neither changes the working directory nor writes `outputs/` folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"


class UserError(Exception):
    """Something the person running the stage can fix: stages print it as one line, exit 2."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the key and what is accepted."""


class InputError(UserError, ValueError):
    """An input file that cannot be used; the message names the file, the line and the reason."""


def project_root() -> Path:
    """The working directory: DVC runs every stage there (a queued experiment in its own temp copy).

    Not `DVC_ROOT`: for a queued experiment DVC points that at the parent repository, whose
    `params.yaml` holds another experiment's values.
    """
    return Path.cwd().resolve()


def shared_path(path: str | Path) -> Path:
    """A cache path shared by every run of the project (captions, latents, base-model images).

    DVC runs a queued experiment in a temporary copy without the git-ignored `data/cache/`, and
    names the parent repository in `DVC_ROOT`: a relative path resolves there, so a sweep reuses
    the workspace's caches (their writes are atomic and keyed by content) instead of recomputing
    them per experiment. Outside DVC, the working directory.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    parent = os.environ.get("DVC_ROOT")
    root = Path(parent) if parent and Path(parent).is_dir() else project_root()
    return (root / path).resolve()


def load_params(overrides: Sequence[str] = (), params_file: str | Path | None = None) -> DictConfig:
    """Compose `params.yaml` with Hydra overrides such as `train.epochs=3` or `+experiment=demo`."""
    from hydra import compose, initialize_config_dir

    path = Path(params_file) if params_file else project_root() / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no params file. Run from the project root, or compose one from conf/ with "
            "`dvc exp run` (or `kshd compose-params`)."
        )
    overrides = list(overrides)
    conf = path.resolve().parent / CONF_DIR
    if conf.is_dir():  # so that `+experiment=demo` finds conf/experiment/demo.yaml
        overrides.insert(0, f"hydra.searchpath=[file://{conf}]")
    with initialize_config_dir(config_dir=str(path.resolve().parent), version_base=None):
        cfg = compose(config_name=path.stem, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def compose_conf(overrides: Sequence[str] = (), conf_dir: str | Path | None = None) -> DictConfig:
    """Compose `conf/` exactly as DVC does for `dvc exp run -S ...` (used by tests and tools)."""
    from hydra import compose, initialize_config_dir

    conf = Path(conf_dir) if conf_dir else project_root() / CONF_DIR
    with initialize_config_dir(config_dir=str(conf.resolve()), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def write_params(cfg: DictConfig, path: str | Path) -> None:
    """Write a composed config the way DVC writes `params.yaml`."""
    Path(path).write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")


def require(condition: bool, key: str, value: object, accepted: str) -> None:
    """Raise a ConfigError naming the key, the bad value and what is accepted."""
    if not condition:
        raise ConfigError(f"config key `{key}` = {value!r} is not valid: expected {accepted}.")
