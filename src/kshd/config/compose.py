"""Configuration: `params.yaml` (what DVC wrote from `conf/`) composed with command-line overrides
into the typed `ProjectConfig`, the one config object stages, the app and the library read.

Stages read `params.yaml` through Hydra's Compose API rather than `@hydra.main` over `conf/`:
`dvc exp run -S` rewrites `params.yaml`, so this is the file that holds an experiment's values,
and the Compose API neither changes the working directory nor writes `outputs/` folders. The
composed tree is filled into the schema here, every group validated once; no Hydra or OmegaConf
object leaves this package. `with_values` changes a loaded config the way an override does."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from kshd.config.errors import ConfigError
from kshd.config.fill import as_plain, nearest_key, retired, settings
from kshd.config.schema import ProjectConfig, check

log = logging.getLogger(__name__)

T = TypeVar("T")


PARAMS_FILE = "params.yaml"


CONF_DIR = "conf"


# conf/ of the source tree this package runs from (src/kshd/config/ is three folders below it):
# where `defaults` reads when the working directory has neither params.yaml nor conf/
SOURCE_CONF = Path(__file__).resolve().parents[3] / CONF_DIR


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


def load_params(
    overrides: Sequence[str] = (), params_file: str | Path | None = None
) -> ProjectConfig:
    """`params.yaml` composed with Hydra overrides such as `train.epochs=3` or `+experiment=demo`,
    filled into the schema: a bad key anywhere is one line naming it, before any model loads."""
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
        tree = _compose(compose, path.stem, overrides)
    return _checked(tree, f"{path.name} (regenerate it from conf/ with `kshd compose-params`)")


def _group_choice(override: str, conf: Path) -> bool:
    """`model=world`, `+experiment=demo`: the override names a config group of conf/."""
    key = override.split("=", 1)[0].lstrip("+~")
    return "." not in key and (conf / key).is_dir()


def compose_conf(
    overrides: Sequence[str] = (), conf_dir: str | Path | None = None
) -> ProjectConfig:
    """`conf/` composed exactly as DVC does for `dvc exp run -S ...`, filled into the schema."""
    from hydra import compose, initialize_config_dir

    conf = Path(conf_dir) if conf_dir else project_root() / CONF_DIR
    with initialize_config_dir(config_dir=str(conf.resolve()), version_base=None):
        tree = _compose(compose, "config", list(overrides))
    return _checked(tree, "conf/")


def _compose(compose, name: str, overrides: list[str]) -> DictConfig:
    """Hydra's compose, its override errors (a misspelt key, a missing option) as one line."""
    from hydra.errors import HydraException

    try:
        return compose(config_name=name, overrides=overrides)
    except HydraException as err:
        cause = f" ({str(err.__cause__).splitlines()[0]})" if err.__cause__ else ""
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        for key in (o.split("=", 1)[0].lstrip("+~") for o in overrides):
            if replaced := retired(ProjectConfig, key):
                raise ConfigError(f"config key `{key}` was replaced: {replaced}.") from None
            if f"'{key}'" in first and (near := nearest_key(ProjectConfig, key)):
                # as `+train.epohcs=3` is told by the schema: the key it was probably meant to be
                raise ConfigError(f"config key `{key}` is unknown: did you mean `{near}`? "
                                  f"({first}{cause})") from None  # fmt: skip
        raise ConfigError(
            f"{first}{cause}: check the key against conf/, or add a new one with `+key=value`."
        ) from None


def _checked(tree: DictConfig, source: str) -> ProjectConfig:
    """Resolved and filled into the schema, before any stage loads a model."""
    OmegaConf.resolve(tree)
    return check(OmegaConf.to_container(tree), source)


def compose_params(output: str | Path, overrides: Sequence[str] = ()) -> None:
    """Write `params.yaml` from the working directory's conf/ exactly as `dvc exp run` does
    (`kshd compose-params`): DVC's own composition, so the file is the one DVC would write."""
    from dvc.utils.hydra import compose_and_dump

    root = project_root()
    compose_and_dump(Path(output), str(root / CONF_DIR), None, "config", str(root), list(overrides))


def write_params(cfg: ProjectConfig, path: str | Path) -> None:
    """Write a config as a params file that `load_params` reads back as the same config (a
    test's or a bench's project; `compose_params` writes the project's own as DVC does)."""
    text = OmegaConf.to_yaml(OmegaConf.create(as_plain(cfg)))
    Path(path).write_text(text, encoding="utf-8")


def with_values(cfg: T, changes: Mapping[str, Any]) -> T:
    """`cfg` with the dotted keys of `changes` set (`{"train.epochs": 1}`), filled and validated
    again through the schema as an override is: config objects stay frozen, and a bad key or
    value is the same one-line ConfigError. Keys that interpolate another in conf/ were resolved
    at composition and keep their value."""
    node = as_plain(cfg)
    for key, value in changes.items():
        *groups, name = key.split(".")
        parent = node
        for i, part in enumerate(groups):
            parent = parent.get(part) if isinstance(parent, dict) else None
            if not isinstance(parent, dict):
                group = ".".join(groups[: i + 1])
                raise ConfigError(
                    f"config key `{key}` is unknown: `{group}` is no group; check it against conf/."
                )
        parent[name] = as_plain(value)
    return settings(node, type(cfg), "", "the changed values")


def value_at(cfg: Any, key: str) -> Any:
    """The value at a dotted key, e.g. `evaluate.sketch.controlnet` (a mapping's keys too)."""
    value = cfg
    for part in key.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif dataclasses.is_dataclass(value) and part in _field_names(value):
            value = getattr(value, part)
        else:
            raise ConfigError(f"config key `{key}` is unknown: check it against conf/.")
    return value


def _field_names(value: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(value)}


def defaults(group: str, conf_dir: str | Path | None = None, /, **overrides: Any):
    """The project's settings for `group` (e.g. "generate", "generate.limits"), `overrides`
    checked like any key: the one way library defaults (`Request`, `EngineSettings`), tests and
    benches get values, which live only in conf/.

    They come from the composition the stages and `kshd gui` read: the working directory's
    params.yaml when there is one, else its conf/, else the conf/ of this source tree
    (`conf_dir` names a conf/ folder instead). Loaded once per file and modification time.
    `group` and `conf_dir` are positional, so that any key may be overridden (`tracking.group`)."""
    source = _defaults_source(conf_dir)
    with _LOADING:  # Hydra's compose is global state: one at a time (the GUI's threads)
        node: Any = _project_config(str(source), _stamp(source))
    cls: Any = ProjectConfig
    for name in group.split("."):
        hints = typing.get_type_hints(cls)
        if name not in hints or not dataclasses.is_dataclass(hints[name]):
            groups = ", ".join(n for n, h in hints.items() if dataclasses.is_dataclass(h))
            raise ConfigError(f"config group `{group}` is unknown: expected one of {groups}.")
        node, cls = getattr(node, name), hints[name]
    return settings({**as_plain(node), **overrides}, cls, group, f"{source} or the overrides")


def _defaults_source(conf_dir: str | Path | None) -> Path:
    """The params file or conf/ folder `defaults` reads (see there)."""
    if conf_dir is not None:
        return Path(conf_dir).resolve()
    params, conf = project_root() / PARAMS_FILE, project_root() / CONF_DIR
    return params if params.is_file() else conf if conf.is_dir() else SOURCE_CONF


def _stamp(source: Path) -> tuple:
    """What tells a changed params file or conf/ folder: each YAML file's time and size."""
    files = [source] if source.is_file() else sorted(source.rglob("*.yaml"))
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


_LOADING = threading.Lock()


@functools.lru_cache(maxsize=8)
def _project_config(source: str, stamp: tuple) -> ProjectConfig:
    """A params file or conf/ folder loaded (cached by `stamp`: Hydra's compose takes ~0.2 s)."""
    path = Path(source)
    return load_params([], path) if path.is_file() else compose_conf([], path)
