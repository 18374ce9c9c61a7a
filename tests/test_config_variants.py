"""Variant groups: a schema base whose first field names the variant, each variant a subclass
with keys of its own, filled by the one filler with its one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kshd.config.errors import ConfigError
from kshd.config.fill import (
    DEFINES_RESULT,
    defining,
    register_variant,
    settings,
    variant_base,
    variants,
)


@variant_base
@dataclass(frozen=True)
class Brush:
    kind: str
    size: int = field(metadata=DEFINES_RESULT)


@register_variant(Brush, "round")
@dataclass(frozen=True)
class RoundBrush(Brush):
    softness: float = field(metadata=DEFINES_RESULT)


@register_variant(Brush, "flat")
@dataclass(frozen=True)
class FlatBrush(Brush):
    angle: int


@dataclass(frozen=True)
class Painting:
    brush: Brush
    title: str


def test_the_node_s_kind_picks_the_variant_and_its_own_keys_are_filled():
    painted = settings({"brush": {"kind": "round", "size": 3, "softness": 0.5}, "title": "x"},
                       Painting, "paint")  # fmt: skip
    assert type(painted.brush) is RoundBrush and painted.brush.softness == 0.5
    flat = settings({"kind": "flat", "size": 2, "angle": 30}, Brush, "paint.brush")
    assert type(flat) is FlatBrush and flat.angle == 30
    assert defining(painted.brush) == {"size": 3, "softness": 0.5}  # the variant's marks count
    assert set(variants(Brush)) == {"round", "flat"}


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"kind": "oval", "size": 1},
            "`paint.brush.kind` = 'oval' is not valid: expected one of flat, round",
        ),  # fmt: skip
        ({"kind": "flat", "size": 1}, "`paint.brush.angle` is missing"),
        (
            {"kind": "flat", "size": 1, "angle": 3, "softness": 1.0},
            "`paint.brush.softness` is unknown",
        ),  # fmt: skip
        ({"kind": "round", "size": "big", "softness": 1.0}, "`paint.brush.size` = 'big'"),
    ],
)
def test_a_wrong_variant_or_a_key_of_another_variant_is_named_in_one_line(node, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")) as err:
        settings({"brush": node, "title": "x"}, Painting, "paint")
    assert "\n" not in str(err.value)


def test_a_variant_must_subclass_its_base():
    with pytest.raises(TypeError, match="must subclass Brush"):
        register_variant(Brush, "odd")(Painting)
