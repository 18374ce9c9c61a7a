"""Danbooru tag captions from a WD v3 tagger's scores, in NoobAI-XL's order, and the trigger
phrase in their artist slot.

NoobAI-XL's card orders a caption `<1girl/1boy/...>, <character>, <series>, <artists>,
<special tags>, <general tags>`; a style LoRA's trigger stands in for the artist. A tag caption
here is: the predicted `always_first_tags` (the count tags by default, in that list's order),
the character tags (WD v3 names the series inside the character tag, `name (series)`), the
artist slot, the rating tag when `use_rating_tags` is on (ratings are among NoobAI's special
tags, after the artist), then the general tags in the label file's order (kohya's order for v3
taggers). Underscores become spaces except in emoticons (`^_^`), as SmilingWolf's tagger demo
keeps them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kshd.config.errors import InputError
from kshd.config.schema_caption import TagOptions

RATING, GENERAL, CHARACTER = "9", "0", "4"  # selected_tags.csv's categories

# SmilingWolf's wd-tagger demo (its app.py `kaomojis`): tags whose underscore is part of a face
KAOMOJIS = frozenset(
    ("0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||")
)  # fmt: skip


@dataclass(frozen=True)
class Labels:
    """selected_tags.csv: each output's tag name and category, in the model's output order."""

    names: tuple[str, ...]
    categories: tuple[str, ...]


def read_labels(path: Path) -> Labels:
    """The label file (columns tag_id, name, category, count), checked as kohya checks it."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][1:3] != ["name", "category"]:
        raise InputError(
            f"{path}: not a WD tagger label file: the header must be tag_id,name,category,count"
        )
    return Labels(tuple(r[1] for r in rows[1:]), tuple(r[2] for r in rows[1:]))


def display_name(tag: str, remove_underscore: bool) -> str:
    """The tag as the caption writes it: underscores to spaces, emoticons kept."""
    return tag.replace("_", " ") if remove_underscore and tag not in KAOMOJIS else tag


def _same(tag: str) -> str:
    """A tag's comparable form: `long_hair` and `Long hair` are one tag."""
    return tag if tag in KAOMOJIS else tag.replace("_", " ").strip().lower()


def select_tags(probs: np.ndarray, labels: Labels, options: TagOptions) -> list[str]:
    """One image's tags in NoobAI's order (see the module), without the trigger."""
    undesired = {_same(t) for t in options.undesired_tags}
    chosen: dict[str, list[str]] = {GENERAL: [], CHARACTER: [], RATING: []}
    thresholds = {GENERAL: options.general_threshold, CHARACTER: options.character_threshold}
    for name, category, p in zip(labels.names, labels.categories, probs, strict=True):
        if category in thresholds and p >= thresholds[category]:
            chosen[category].append(name)
    ratings = [i for i, c in enumerate(labels.categories) if c == RATING]
    if options.use_rating_tags and ratings:
        chosen[RATING] = [labels.names[max(ratings, key=lambda i: probs[i])]]  # argmax, as kohya
    kept = {
        c: [display_name(t, options.remove_underscore) for t in tags if _same(t) not in undesired]
        for c, tags in chosen.items()
    }
    first = {_same(t): i for i, t in enumerate(options.always_first_tags)}
    lead = sorted((t for t in kept[GENERAL] if _same(t) in first), key=lambda t: first[_same(t)])
    rest = [t for t in kept[GENERAL] if _same(t) not in first]
    return lead + kept[CHARACTER] + kept[RATING] + rest


def character_names(labels: Labels) -> frozenset[str]:
    """The label file's character tags, in comparable form."""
    pairs = zip(labels.names, labels.categories, strict=True)
    return frozenset(_same(n) for n, c in pairs if c == CHARACTER)


def with_trigger_in_slot(
    caption: str, trigger: str, always_first: Sequence[str], characters: frozenset[str]
) -> str:
    """`trigger` in the artist slot of a tag caption: after the leading tags that are among
    `always_first` (the count tags) or `characters`, before everything else. Any caption (a
    sidecar's, an override's, a sentence) gets it there: a sentence's first words are neither,
    so the trigger goes first, before the general content, as on NoobAI's card."""
    if not trigger:
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    first = {_same(t) for t in always_first}
    slot = 0
    while slot < len(tags) and _same(tags[slot]) in first:
        slot += 1
    while slot < len(tags) and _same(tags[slot]) in characters:
        slot += 1
    return ", ".join([*tags[:slot], trigger, *tags[slot:]])
