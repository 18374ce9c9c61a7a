"""Configuration: compose `params.yaml` (what DVC wrote from `conf/`) with command-line overrides.

Stages read `params.yaml` through Hydra's Compose API rather than `@hydra.main` over `conf/`:
`dvc exp run -S` rewrites `params.yaml`, so this is the file that holds an experiment's values,
and the Compose API neither changes the working directory nor writes `outputs/` folders.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
T = TypeVar("T")
# Marks a settings field whose value changes a stage's result (fingerprints, cache keys, and
# the DVC params of the stage named like its group): `field(metadata=DEFINES_RESULT)`.
# Fields without a mark change how, not what, is computed.
DEFINES_RESULT = {"defines_result": True}
# The DVC stages, each named like the config group that defines its result.
STAGES = ("prepare", "caption", "dataset", "train", "evaluate")

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
# conf/ of the source tree this package runs from: where `defaults` reads when cwd has none
SOURCE_CONF = Path(__file__).resolve().parents[2] / CONF_DIR


def changes(*stages: str) -> dict:
    """Marks a field that changes these stages' outputs (a DVC param of each) without being in
    its group's fingerprint, e.g. validation images, or a key another group's stage reads."""
    if set(stages) - set(STAGES):
        raise ValueError(f"changes{stages}: each must be one of {STAGES}")
    return {"stages": tuple(stages)}


def field_stages(group: str, f: dataclasses.Field) -> tuple[str, ...]:
    """The stages whose outputs change with this field of `group` (its marks)."""
    own = (group,) if f.metadata.get("defines_result") and group in STAGES else ()
    return own + tuple(s for s in f.metadata.get("stages", ()) if s not in own)


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
    from kshd.schema import check

    OmegaConf.resolve(cfg)
    check(cfg, source)
    return cfg


def defaults(group: str, conf_dir: str | Path | None = None, **overrides: Any):
    """conf/'s settings for `group` (e.g. "train", "generate.limits"), `overrides` checked like
    any key: the one way code, tests and benches get defaults, which live only in conf/.

    conf/ is composed once per folder (the stages' compose; no torch import). `conf_dir`
    defaults to ./conf, else the conf/ beside this package's source."""
    from kshd.schema import ProjectConfig

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


def require(condition: bool, key: str, value: object, accepted: str) -> None:
    """Raise a ConfigError naming the key, the bad value and what is accepted."""
    if not condition:
        raise ConfigError(f"config key `{key}` = {value!r} is not valid: expected {accepted}.")


def settings(node: Mapping | DictConfig, cls: type[T], key: str, source: str = "conf/") -> T:
    """`cls` filled from the config node at `key`: every field must be there and nothing else,
    so a misspelt key is named instead of silently dropped, and no default hides in code."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise ConfigError(f"config key `{key}` = {node!r} is not valid: expected a mapping.")
    names = [f.name for f in dataclasses.fields(cls)]
    path = f"{key}." if key else ""
    for name in node:
        if name not in names:
            near = difflib.get_close_matches(str(name), names, n=1)
            hint = f"did you mean `{path}{near[0]}`? " if near else ""
            raise ConfigError(
                f"config key `{path}{name}` is unknown: {hint}remove or rename it in {source}."
            )
    for name in names:
        if name not in node:
            raise ConfigError(
                f"config key `{path}{name}` is missing: add it to {source}, or pass "
                f"`+{path}{name}=<value>`."
            )
    hints = typing.get_type_hints(cls)
    value = cls(**{n: _typed(node[n], hints[n], f"{path}{n}", source) for n in names})
    if hasattr(value, "validate"):
        value.validate()
    return value


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _typed(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` checked against the field's type; lists become tuples where the field says so."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner, key, source)
    if dataclasses.is_dataclass(hint):
        return settings(value, hint, key, source)
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        ok = isinstance(value, list | tuple) and (not fixed or len(value) == len(args))
        require(ok, key, value, f"a list of {len(args)} values" if fixed else "a list")
        inner = args if fixed else [args[0]] * len(value)
        return tuple(
            _typed(v, h, f"{key}[{i}]", source)
            for i, (v, h) in enumerate(zip(value, inner, strict=True))
        )
    if origin is dict:
        require(isinstance(value, Mapping), key, value, "a mapping")
        return {str(k): _typed(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (bool, str):
        ok = isinstance(value, hint)
    else:
        ok = True
    null = " (null is not accepted here)" if value is None else ""
    require(ok, key, value, _WORDS.get(hint, str(hint)) + null)
    return value


def defining(value: object) -> dict:
    """The fields marked DEFINES_RESULT, by name: what a fingerprint or cache key hashes."""
    return {
        f.name: getattr(value, f.name)
        for f in dataclasses.fields(value)
        if f.metadata.get("defines_result")
    }
