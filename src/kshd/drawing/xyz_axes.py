"""The X/Y/Z plot's axes as AUTOMATIC1111's script types them: comma-separated values (CSV, so
a value holding a comma is quoted), and for number axes the ranges `1-5`, `1-5 (+2)`,
`10-5 (-3)`, `1-3 (+0.5)` and `1-10 [5]` (a count of evenly spaced values, whole numbers
rounded down), each checked before anything is drawn and named by its axis when wrong."""

from __future__ import annotations

import csv
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from itertools import chain
from pathlib import Path

import numpy as np

from kshd.drawing.catalog import NONE, LoraCatalog
from kshd.drawing.request import MAX_SEED, SAMPLERS, Request, RequestError, sampler_key

NOTHING = "Nothing"
_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\[(\d+)\s*])?\s*")
FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\[(\d+)\s*])?\s*")
MARKS = (" (best)", " (trained)")  # the LoRA chooser's marks, optional when typed


class AxisError(RequestError):
    """An axis value that cannot be drawn; the message names the axis ("X values: ...")."""


@dataclass(frozen=True)
class AxisKind:
    """One of the script's axis types: its label (A1111's where it has one), the type of its
    values, and how costly a change of it is (the costliest axis is drawn outermost, so each
    of its values is set once)."""

    label: str
    type: type
    apply: Callable[[Request, object, list], None]
    cost: float = 0.0


def _field(name: str) -> Callable[[Request, object, list], None]:
    return lambda req, value, values: setattr(req, name, value)


def _search_replace(req: Request, value: object, values: list) -> None:
    """Prompt S/R: the first value is searched for and replaced by this one, in the prompts
    and their prefixes (the app's prefixes hold what A1111's styles hold: the trigger phrase)."""
    for name in ("prompt", "negative_prompt", "positive_prefix", "negative_prefix"):
        setattr(req, name, getattr(req, name).replace(values[0], value))


def _nothing(req: Request, value: object, values: list) -> None:
    """No change (the Nothing axis; the LoRA, which the runner loads between cells)."""


KINDS = {
    k.label: k
    for k in (
        AxisKind(NOTHING, str, _nothing),
        AxisKind("Seed", int, _field("seed")),
        AxisKind("Steps", int, _field("steps")),
        AxisKind("CFG Scale", float, _field("cfg_scale")),
        AxisKind("Sampler", str, _field("sampler")),
        AxisKind("Prompt S/R", str, _search_replace),
        # a LoRA (or training checkpoint) of the chooser: loading one is the slow change
        AxisKind("LoRA", str, _nothing, cost=1.0),
        # a new strength re-merges the LoRA into the weights: drawn in runs as well
        AxisKind("LoRA strength", float, _field("lora_scale"), cost=0.5),
    )
}


def split_values(text: str) -> list[str]:
    """A1111's reading of a values box: one CSV row, each value stripped."""
    return [v.strip() for v in chain.from_iterable(csv.reader(StringIO(text)))]


def to_csv(values: list[str]) -> str:
    """Values as one CSV row (a value holding a comma quoted): what `split_values` reads."""
    with StringIO() as out:
        csv.writer(out).writerow(values)
        return out.getvalue().strip()


def _int(text: str, axis: str) -> int:
    try:
        return int(text.replace(" ", ""))
    except ValueError:
        raise AxisError(axis, f"{text!r} is not a whole number or a range") from None


def _float(text: str, axis: str) -> float:
    try:
        return float(text.replace(" ", ""))
    except ValueError:
        raise AxisError(axis, f"{text!r} is not a number or a range") from None


def _ints(value: str, axis: str) -> list[int]:
    if m := RANGE.fullmatch(value):
        start, end = _int(m.group(1), axis), _int(m.group(2), axis)
        step = _int(m.group(3), axis) if m.group(3) else 1
        if step == 0:
            raise AxisError(axis, f"{value!r}: a step of 0")
        return list(range(start, end + 1, step))
    if m := RANGE_COUNT.fullmatch(value):
        start, end = _int(m.group(1), axis), _int(m.group(2), axis)
        count = int(m.group(3)) if m.group(3) else 1
        return [int(v) for v in np.linspace(start, end, count).tolist()]
    return [_int(value, axis)]


def _floats(value: str, axis: str) -> list[float]:
    if m := FLOAT_RANGE.fullmatch(value):
        start, end = _float(m.group(1), axis), _float(m.group(2), axis)
        step = _float(m.group(3), axis) if m.group(3) else 1.0
        if step == 0:
            raise AxisError(axis, f"{value!r}: a step of 0")
        found = np.arange(start, end + step, step).tolist()
    elif m := FLOAT_COUNT.fullmatch(value):
        start, end = _float(m.group(1), axis), _float(m.group(2), axis)
        found = np.linspace(start, end, int(m.group(3)) if m.group(3) else 1).tolist()
    else:
        found = [_float(value, axis)]
    return [round(v, 8) for v in found]  # 0.6, not 0.6000000000000001 (A1111's labels)


def parse_values(kind: AxisKind, text: str, axis: str = "values") -> list:
    """The values typed for an axis of `kind`, ranges expanded (`axis` names it in errors)."""
    if kind.label == NOTHING:
        return [None]
    values = split_values(text)
    if not any(values):
        raise AxisError(axis, f"no values for {kind.label}")
    if kind.type is int:
        return [n for v in values for n in _ints(v, axis)]
    if kind.type is float:
        return [n for v in values for n in _floats(v, axis)]
    return values


def lora_choice(typed: str, catalog: LoraCatalog) -> tuple[str, str]:
    """(label, path) of the chooser's entry `typed` names: its label (the marks "(best)" and
    "(trained)" may be left out), its file's or folder's name, or its path; "None" or nothing:
    the base model alone. Only the chooser's entries are taken, never another path."""
    choices = catalog.choices()
    if typed.strip().lower() in ("", "none"):
        return choices[0][0], NONE
    wanted = typed.strip().lower()
    for label, path in choices:
        names = {label.lower(), path.lower(), Path(path).name.lower() if path else ""}
        names |= {label.lower().removesuffix(m) for m in MARKS}
        if wanted in names:
            return label, path
    known = ", ".join(label for label, _ in choices[1:]) or "none but the base model"
    raise AxisError("LoRA", f"{typed!r} is not in the LoRA list (Refresh reads the folders); "
                            f"it has: {known}")  # fmt: skip


@dataclass
class AxisValues:
    """One axis ready to draw: its kind, the values set on the cells, their labels, and what
    A1111's infotext says of it."""

    kind: AxisKind
    values: list
    labels: list[str]
    typed: str  # the values as typed ("X Values")
    fixed: str | None = None  # the seeds drawn, -1 replaced ("Fixed X Values")


def _label(kind: AxisKind, value: object) -> str:
    if kind.label == NOTHING:
        return ""
    if kind.label == "Sampler":
        return SAMPLERS[value][0]
    if kind.label == "Prompt S/R":
        return str(value)
    return f"{kind.label}: {value:g}" if isinstance(value, float) else f"{kind.label}: {value}"


def prepare_axis(
    name: str, kind_label: str, typed: str, base: Request, catalog: LoraCatalog
) -> AxisValues:
    """Axis `name` ("X") of type `kind_label` with its typed values: parsed, each value checked
    (a sampler known, the S/R text in the prompts, a LoRA in the chooser), seeds of -1 drawn."""
    axis = f"{name} values"
    if kind_label not in KINDS:
        raise AxisError(f"{name} type", f"{kind_label!r}; choose one of {', '.join(KINDS)}")
    kind = KINDS[kind_label]
    values = parse_values(kind, typed, axis)
    labels = [_label(kind, v) for v in values] if kind.label != "Sampler" else []
    fixed = None
    if kind.label == "Seed":
        values = [secrets.randbelow(MAX_SEED) if v == -1 else v for v in values]
        labels, fixed = [_label(kind, v) for v in values], ", ".join(map(str, values))
    elif kind.label == "Sampler":
        try:
            values = [sampler_key(v) for v in values]
        except RequestError as exc:
            raise AxisError(axis, str(exc).partition(": ")[2]) from None
        labels = [_label(kind, v) for v in values]
    elif kind.label == "Prompt S/R":
        texts = (base.prompt, base.negative_prompt, base.positive_prefix, base.negative_prefix)
        if not any(values[0] in t for t in texts):
            raise AxisError(axis, f"Prompt S/R did not find {values[0]!r} in the prompts")
    elif kind.label == "LoRA":
        try:
            chosen = [lora_choice(v, catalog) for v in values]
        except AxisError as exc:
            raise AxisError(axis, str(exc).partition(": ")[2]) from None
        labels, values = [label for label, _ in chosen], [path or None for _, path in chosen]
    return AxisValues(kind, values, labels, typed, fixed)


def cell_order(axes: tuple[AxisValues, AxisValues, AxisValues]) -> list[tuple[int, int, int]]:
    """(ix, iy, iz) in the order drawn, as A1111's script orders them: the costliest axis
    outermost (each LoRA loaded once), then the costlier of the others; Z, Y, X when tied."""
    x, y, z = (a.kind.cost for a in axes)
    first, second = "z", "y"
    if x > y and x > z:
        first, second = "x", "y" if y > z else "z"
    elif y > x and y > z:
        first, second = "y", "x" if x > z else "z"
    elif z > x and z > y:
        first, second = "z", "x" if x > y else "y"
    third = ({"x", "y", "z"} - {first, second}).pop()
    sizes = {"x": len(axes[0].values), "y": len(axes[1].values), "z": len(axes[2].values)}
    order = []
    for a in range(sizes[first]):
        for b in range(sizes[second]):
            for c in range(sizes[third]):
                at = {first: a, second: b, third: c}
                order.append((at["x"], at["y"], at["z"]))
    return order
