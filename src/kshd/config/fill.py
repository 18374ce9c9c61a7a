"""A schema dataclass filled from a config node: unknown, missing and mistyped keys named in one
line; the fields' marks say which stages' results a key changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from kshd.config.errors import ConfigError

T = TypeVar("T")


# Marks a settings field whose value changes a stage's result (fingerprints, cache keys, and
# the DVC params of the stage named like its group): `field(metadata=DEFINES_RESULT)`.
# Fields without a mark change how, not what, is computed.
DEFINES_RESULT = {"defines_result": True}


# The DVC stages, each named like the config group that defines its result.
STAGES = ("prepare", "caption", "dataset", "train", "evaluate")


def changes(*stages: str) -> dict:
    """Marks a field that changes these stages' outputs (a DVC param of each) without being in
    its group's fingerprint, e.g. validation images, or a key another group's stage reads."""
    if set(stages) - set(STAGES):
        raise ValueError(f"changes{stages}: each must be one of {STAGES}")
    return {"stages": tuple(stages)}


# Variant groups: a schema base class (its first field names the variant, e.g. `kind`) and the
# subclass of each variant, which adds that variant's own keys. `settings` fills the subclass
# the node names; `register_variant` adds one (a seam's new file, or a test's throwaway).
_VARIANTS: dict[type, dict[str, type]] = {}


def variant_base(cls: type[T]) -> type[T]:
    """Marks a schema dataclass as the base of a variant group (a class decorator)."""
    _VARIANTS.setdefault(cls, {})
    return cls


def register_variant(base: type, name: str):
    """Registers the decorated subclass of `base` as the variant `name` (a class decorator)."""

    def register(cls: type[T]) -> type[T]:
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__name__}")
        _VARIANTS[base][name] = cls
        return cls

    return register


def is_variant_base(cls: object) -> bool:
    return cls in _VARIANTS


def variants(base: type) -> dict[str, type]:
    """The registered variants of a variant base, by name ({} for any other class)."""
    return dict(_VARIANTS.get(base, {}))


def discriminator(base: type) -> str:
    """The field naming a variant base's variant (its first field)."""
    return dataclasses.fields(base)[0].name


def _variant_class(node: Mapping, base: type, key: str, source: str) -> type:
    """The subclass of `base` that the node's discriminator names; one line naming the choices."""
    field = discriminator(base)
    path = f"{key}.{field}" if key else field
    name = node.get(field)
    choices = _VARIANTS[base]
    if name not in choices:
        raise ConfigError(
            f"config key `{path}` = {name!r} is not valid: expected one of "
            f"{', '.join(sorted(choices))} (set in {source})."
        )
    return choices[name]


def _kind_note(node: Mapping, base: type | None, key: str, says: str) -> str:
    """For a variant group's key: its kind is chosen with its config group, which brings the
    kind's keys, not by setting the kind alone (`caption=none`, not `caption.kind=none`)."""
    if base is None:
        return ""
    field = discriminator(base)
    kind = node.get(field)
    return (
        f"`{key}.{field}` = {kind!r} {says} (choose a kind by its config group, e.g. "
        f"`{key.replace('.', '/')}={kind}`, not by `{key}.{field}` alone); "
    )


def _not_a_mapping(node: object, cls: type, key: str) -> str:
    """What went wrong when a node is a single value: for a variant group chosen as a key
    (`train.adapter=locon`, which replaces the whole node), the group syntax that chooses it."""
    if cls in _VARIANTS and isinstance(node, str) and node in _VARIANTS[cls]:
        group = key.replace(".", "/")
        return (
            f"config key `{key}` = {node!r} replaced the whole group: choose {node} as a config "
            f"group with `{group}={node}` (and `{key}.<name>=<value>` for one of its keys)."
        )
    return f"config key `{key}` = {node!r} is not valid: expected a mapping."


def retired(cls: type, key: str) -> str | None:
    """What replaced a retired dotted key of the schema `cls` (a settings class's `RETIRED`,
    e.g. `train.use_8bit_adam`); None for any other key."""
    *groups, name = key.split(".")
    for group in groups:
        hint = typing.get_type_hints(cls).get(group) if dataclasses.is_dataclass(cls) else None
        if hint is None or not dataclasses.is_dataclass(hint):
            return None
        cls = hint
    return getattr(cls, "RETIRED", {}).get(name)


def nearest_key(cls: type, key: str) -> str | None:
    """The schema key closest to a misspelt dotted `key` (`train.epohcs` -> `train.epochs`,
    `trian.epochs` -> `train.epochs`; a variant group's keys are those of all its kinds), or
    None when nothing is close or `key` is the schema's own."""
    *groups, name = key.split(".")
    found = []
    for group in groups:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        near = (
            group
            if group in hints
            else next(iter(difflib.get_close_matches(group, hints, 1)), None)
        )
        if near is None or not dataclasses.is_dataclass(hints[near]):
            return None
        found.append(near)
        cls = hints[near]
    if not dataclasses.is_dataclass(cls):
        return None
    names = {f.name for c in (cls, *variants(cls).values()) for f in dataclasses.fields(c)}
    near = name if name in names else next(iter(difflib.get_close_matches(name, names, 1)), None)
    suggestion = ".".join([*found, near]) if near else None
    return suggestion if suggestion != key else None


def field_stages(group: str, f: dataclasses.Field) -> tuple[str, ...]:
    """The stages whose outputs change with this field of `group` (its marks)."""
    own = (group,) if f.metadata.get("defines_result") and group in STAGES else ()
    return own + tuple(s for s in f.metadata.get("stages", ()) if s not in own)


def require(condition: bool, key: str, value: object, accepted: str) -> None:
    """Raise a ConfigError naming the key, the bad value and what is accepted."""
    if not condition:
        raise ConfigError(f"config key `{key}` = {value!r} is not valid: expected {accepted}.")


def settings(node: Mapping, cls: type[T], key: str, source: str = "conf/") -> T:
    """`cls` filled from the config node at `key`: every field must be there and nothing else,
    so a misspelt key is named instead of silently dropped, and no default hides in code."""
    if not isinstance(node, Mapping):
        raise ConfigError(_not_a_mapping(node, cls, key))
    path = f"{key}." if key else ""
    base = cls if cls in _VARIANTS else None
    if base is not None:
        cls = _variant_class(node, base, key, source)
    names = [f.name for f in dataclasses.fields(cls)]
    for name in node:
        if name not in names:
            if replaced := getattr(cls, "RETIRED", {}).get(name):
                raise ConfigError(
                    f"config key `{path}{name}` was replaced: {replaced}; remove "
                    f"`{path}{name}` from {source}."
                )
            near = difflib.get_close_matches(str(name), names, n=1)
            hint = (
                f"did you mean `{path}{near[0]}`? "
                if near
                else _kind_note(node, base, key, "has no such key")
            )
            raise ConfigError(
                f"config key `{path}{name}` is unknown: {hint}remove or rename it in {source}."
            )
    for name in names:
        if name not in node:
            raise ConfigError(
                f"config key `{path}{name}` is missing: {_kind_note(node, base, key, 'needs it')}"
                f"add it to {source}, or pass `+{path}{name}=<value>`."
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


def as_plain(value: Any) -> Any:
    """The reverse of `settings`: a settings object as plain values (mappings, lists), which
    `settings` fills back into the same object; what YAML and wandb take."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_plain(v) for v in value]
    return value


def defining(value: object) -> dict:
    """The fields marked DEFINES_RESULT, by name: what a fingerprint or cache key hashes."""
    return {
        f.name: getattr(value, f.name)
        for f in dataclasses.fields(value)
        if f.metadata.get("defines_result")
    }
