"""Configuration: compose `params.yaml` (what DVC wrote from `conf/`) with command-line overrides.

Stages read `params.yaml` through Hydra's Compose API rather than `@hydra.main` over `conf/`:
`dvc exp run -S` rewrites `params.yaml`, so this is the file that holds an experiment's values,
and the Compose API neither changes the working directory nor writes `outputs/` folders."""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kshd.config.errors import ConfigError
from kshd.config.fill import settings

log = logging.getLogger(__name__)


PARAMS_FILE = "params.yaml"


CONF_DIR = "conf"


# conf/ of the source tree this package runs from: where `defaults` reads when cwd has none
SOURCE_CONF = Path(__file__).resolve().parents[2] / CONF_DIR


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
    if conf.is_dir() and any(_group_choice(o, conf) for o in overrides):
        # `+experiment=demo`, `model=noobai_xl`: a config group chosen (whose files may override
        # other groups, as the demo picks model=world) needs conf/'s defaults list, which
        # params.yaml, composed already, has not: composed from conf/ as `dvc exp run -S` does
        return compose_conf(overrides, conf)
    if conf.is_dir():  # so that a `+key=value` of conf/ resolves
        overrides.insert(0, f"hydra.searchpath=[file://{conf}]")
    with initialize_config_dir(config_dir=str(path.resolve().parent), version_base=None):
        cfg = _compose(compose, path.stem, overrides)
    return _checked(cfg, f"{path.name} (regenerate it from conf/ with `kshd compose-params`)")


def _group_choice(override: str, conf: Path) -> bool:
    """`model=world`, `+experiment=demo`: the override names a config group of conf/."""
    key = override.split("=", 1)[0].lstrip("+~")
    return "." not in key and (conf / key).is_dir()


def compose_conf(overrides: Sequence[str] = (), conf_dir: str | Path | None = None) -> DictConfig:
    """Compose `conf/` exactly as DVC does for `dvc exp run -S ...` (used by tests and tools)."""
    from hydra import compose, initialize_config_dir

    conf = Path(conf_dir) if conf_dir else project_root() / CONF_DIR
    with initialize_config_dir(config_dir=str(conf.resolve()), version_base=None):
        cfg = _compose(compose, "config", list(overrides))
    return _checked(cfg, "conf/")


def _compose(compose, name: str, overrides: list[str]) -> DictConfig:
    """Hydra's compose, its override errors (a misspelt key, a missing option) as one line."""
    from hydra.errors import HydraException

    try:
        return compose(config_name=name, overrides=overrides)
    except HydraException as err:
        cause = f" ({str(err.__cause__).splitlines()[0]})" if err.__cause__ else ""
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"{first}{cause}: check the key against conf/, or add a new one with `+key=value`."
        ) from None


def _checked(cfg: DictConfig, source: str) -> DictConfig:
    """Resolved and checked against the schema, before any stage loads a model."""
    from kshd.config.schema import check

    OmegaConf.resolve(cfg)
    check(cfg, source)
    return cfg


def defaults(group: str, conf_dir: str | Path | None = None, **overrides: Any):
    """conf/'s settings for `group` (e.g. "train", "generate.limits"), `overrides` checked like
    any key: the one way code, tests and benches get defaults, which live only in conf/.

    conf/ is composed once per folder (the stages' compose; no torch import). `conf_dir`
    defaults to ./conf, else the conf/ beside this package's source."""
    from kshd.config.schema import ProjectConfig

    if conf_dir is None:
        conf_dir = project_root() / CONF_DIR
        conf_dir = conf_dir if conf_dir.is_dir() else SOURCE_CONF
    node: Any = copy.deepcopy(_composed(str(Path(conf_dir).resolve())))
    cls: Any = ProjectConfig
    for name in group.split("."):
        hints = typing.get_type_hints(cls)
        if name not in hints or not dataclasses.is_dataclass(hints[name]):
            groups = ", ".join(n for n, h in hints.items() if dataclasses.is_dataclass(h))
            raise ConfigError(f"config group `{group}` is unknown: expected one of {groups}.")
        node, cls = node[name], hints[name]
    return settings({**node, **overrides}, cls, group, f"{conf_dir} or the overrides")


@functools.lru_cache(maxsize=4)
def _composed(conf_dir: str) -> dict:
    """conf/ composed and resolved, as plain values (cached: Hydra's compose takes ~0.2 s)."""
    return OmegaConf.to_container(compose_conf([], conf_dir), resolve=True)


def write_params(cfg: DictConfig, path: str | Path) -> None:
    """Write a composed config the way DVC writes `params.yaml`."""
    Path(path).write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
