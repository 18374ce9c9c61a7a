"""Caption review: what each drawing is captioned now, and the reviewer's edits.

The caption stage writes, per drawing, its caption (without the trigger phrase) and where it
came from (`data/reports/caption_items.json`). The current state is that file with the
reviewer's lists laid over it: a row of the overrides CSV wins (and the stage will use it at the
next `dvc repro`), a row of the exclusions CSV leaves the drawing out of training. Every edit is
a locked read-modify-write of one list (kshd.data.caption_lists), other rows kept; a bulk tag
edit writes override rows for exactly the drawings whose caption changes.

Tags are the comma-separated parts of a caption, matched whole and case-sensitively, as
Danbooru's tags are (`1girl` is not `1Girl`, and `hair` does not match `long hair`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kshd.config.errors import InputError, UserError
from kshd.config.schema import ProjectConfig
from kshd.data.caption_lists import (
    EXCLUSIONS_HEADER,
    ITEMS_FILE,
    OVERRIDES_HEADER,
    Rows,
    read_rows,
    update_rows,
)

OVERRIDE = "override"  # kshd.data.caption_sources' name for a reviewed caption


class NoCaptionReport(UserError, FileNotFoundError):
    """No caption stage has run yet: nothing to review."""


@dataclass(frozen=True)
class ReviewFiles:
    """Where review reads and writes (all from the config: `ReviewFiles.of(cfg)`)."""

    items: Path  # the caption stage's per-drawing file
    overrides: Path  # caption.overrides
    exclusions: Path  # caption.exclusions
    prepared: Path  # data.prepared_dir: the drawings, for thumbnails
    trigger: str  # caption.trigger_phrase: never written into an override

    @classmethod
    def of(cls, cfg: ProjectConfig) -> ReviewFiles:
        """The workspace's: its reports folder, its two lists, its prepared drawings."""
        return cls(
            items=Path(cfg.data.reports_dir) / ITEMS_FILE,
            overrides=Path(cfg.caption.overrides),
            exclusions=Path(cfg.caption.exclusions),
            prepared=Path(cfg.data.prepared_dir),
            trigger=cfg.caption.trigger_phrase,
        )


@dataclass(frozen=True)
class Drawing:
    """One drawing as review shows it. `source` is the stage's (override, sidecar,
    `<kind>_cached`, `<kind>_new`) or `override` for an edit not yet applied (`edited`)."""

    file: str
    output: str
    caption: str
    source: str
    split: str  # train or reg (a regularization drawing)
    excluded: bool = False
    reason: str = ""
    edited: bool = False  # the overrides or exclusions say other than the last caption run

    def names(self) -> tuple[str, str]:
        return self.file, self.output

    def tags(self) -> list[str]:
        return split_tags(self.caption)


@dataclass(frozen=True)
class Change:
    """What an edit wrote: a one-line message and the drawings it touched."""

    message: str
    files: tuple[str, ...] = ()
    path: Path | None = None


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(dict.fromkeys(tags))  # a tag twice (after a replace) once


def _first(rows: Rows, names: tuple[str, str]) -> str | None:
    """The value of the row naming the drawing, by raw name first; of two rows with one name
    the last, as the caption stage reads them (kshd.data.caption_sources.read_overrides)."""
    by_name = dict(rows)
    for name in names:
        if name in by_name:
            return by_name[name]
    return None


def load(files: ReviewFiles) -> list[Drawing]:
    """The drawings of the last caption run with the overrides and exclusions as they are now."""
    if not files.items.is_file():
        raise NoCaptionReport(
            f"{files.items}: no caption report yet; run `dvc repro caption` (or `dvc repro`) "
            "once, then review the captions"
        )
    made = json.loads(files.items.read_text(encoding="utf-8"))["drawings"]
    overrides = read_rows(files.overrides, OVERRIDES_HEADER)
    exclusions = read_rows(files.exclusions, EXCLUSIONS_HEADER)
    return [_current(d, overrides, exclusions) for d in made]


def _current(made: dict, overrides: Rows, exclusions: Rows) -> Drawing:
    names = (made["file"], made["output"])
    caption, source = made["caption"], made["source"]
    override = _first(overrides, names)
    if override is not None:
        caption, source = override, OVERRIDE
    reason = _first(exclusions, names)
    excluded = reason is not None
    edited = (caption, source) != (made["caption"], made["source"]) or excluded != made.get(
        "excluded", False
    )
    return Drawing(made["file"], made["output"], caption, source, made.get("split", "train"),
                   excluded, reason or "", edited)  # fmt: skip


def find(drawings: list[Drawing], name: str) -> Drawing:
    """The drawing with this raw or prepared name; an unknown one is refused by name."""
    for d in drawings:
        if name in d.names():
            return d
    raise InputError(
        f"no drawing named {name!r} in the last caption run; `kshd captions list` names them "
        "(raw file name or prepared name)"
    )


def select(
    drawings: list[Drawing], tag: str = "", source: str = "", text: str = "", split: str = ""
) -> list[Drawing]:
    """The drawings with the whole tag `tag`, from `source` (a prefix: `blip2` matches
    blip2_cached and blip2_new), whose name or caption holds `text` (any case)."""
    text = text.lower()
    return [
        d
        for d in drawings
        if (not tag or tag in d.tags())
        and (not source or d.source.startswith(source))
        and (not text or text in f"{d.file} {d.output} {d.caption}".lower())
        and (not split or d.split == split)
    ]


def tag_counts(drawings: list[Drawing]) -> list[tuple[str, int]]:
    """How many of the (not excluded) drawings carry each tag, most frequent first."""
    counts = Counter(t for d in drawings if not d.excluded for t in dict.fromkeys(d.tags()))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def without_trigger(caption: str, trigger: str) -> str:
    """The caption as the overrides hold it: whitespace collapsed, the trigger phrase dropped
    where it is a tag of its own (a line pasted from info.csv); refused where it is part of a
    longer tag, which only the writer can split."""
    caption = " ".join(caption.split())
    if not trigger:
        return caption
    tags = [t for t in split_tags(caption) if t.lower() != trigger.lower()]
    if any(trigger.lower() in t.lower() for t in tags):
        raise InputError(
            f"caption {caption!r} holds the trigger phrase {trigger!r} inside a tag: the "
            "caption stage adds it; give the caption without it"
        )
    return ", ".join(tags) if len(tags) != len(split_tags(caption)) else caption


def _put(rows: Rows, d: Drawing, value: str) -> Rows:
    """`rows` with the drawing's row set to `value`: its first row (by either name) kept in
    place, any other row naming it dropped, a new row (by raw name) appended if none."""
    out, placed = [], False
    for name, old in rows:
        if name in d.names():
            if not placed:
                out.append((name, value))
                placed = True
            continue
        out.append((name, old))
    return out if placed else [*out, (d.file, value)]


def _drop(rows: Rows, d: Drawing) -> Rows:
    return [(name, value) for name, value in rows if name not in d.names()]


def set_caption(files: ReviewFiles, name: str, caption: str) -> Change:
    """Give one drawing a reviewed caption (without the trigger phrase)."""
    d = find(load(files), name)
    caption = without_trigger(caption, files.trigger)
    update_rows(files.overrides, OVERRIDES_HEADER, lambda rows: _put(rows, d, caption))
    return Change(f"{d.file}: caption set in {files.overrides}", (d.file,), files.overrides)


def edit_tags(files: ReviewFiles, edit: Callable[[list[str]], list[str]], what: str) -> Change:
    """Apply `edit` to every drawing's tags; override rows for those whose caption changes,
    computed inside the lock from the overrides as they are then (a tab's edit a moment
    earlier is built on, not lost)."""
    changed: list[str] = []

    def change(rows: Rows) -> Rows:
        changed.clear()
        made = json.loads(files.items.read_text(encoding="utf-8"))["drawings"]
        for m in made:
            d = _current(m, rows, [])
            tags = edit(d.tags())
            if tags != d.tags():
                rows = _put(rows, d, join_tags(tags))
                changed.append(d.file)
        return rows

    load(files)  # the report must exist; its absence said in one line
    update_rows(files.overrides, OVERRIDES_HEADER, change)
    return Change(f"{what}: {len(changed)} captions changed in {files.overrides}",
                  tuple(changed), files.overrides)  # fmt: skip


def _tag(tag: str, role: str) -> str:
    tag = " ".join(tag.split())
    if not tag or "," in tag:
        raise InputError(f"{role} tag {tag!r}: give one tag, without commas")
    return tag


def replace_tag(files: ReviewFiles, old: str, new: str) -> Change:
    """Every whole `old` tag becomes `new` (kept once where a caption already had `new`)."""
    old, new = _tag(old, "the old"), _tag(new, "the new")
    if new.lower() == files.trigger.lower():
        raise InputError(f"the new tag {new!r} is the trigger phrase: the caption stage adds it")
    return edit_tags(files, lambda tags: [new if t == old else t for t in tags],
                     f"{old!r} replaced by {new!r}")  # fmt: skip


def remove_tag(files: ReviewFiles, tag: str) -> Change:
    tag = _tag(tag, "the")
    return edit_tags(files, lambda tags: [t for t in tags if t != tag], f"{tag!r} removed")


def exclude(files: ReviewFiles, name: str, reason: str = "") -> Change:
    """Leave a drawing out of training (info.csv / reg_info.csv) from the next caption run."""
    d = find(load(files), name)
    reason = " ".join(reason.split())
    update_rows(files.exclusions, EXCLUSIONS_HEADER, lambda rows: _put(rows, d, reason))
    return Change(f"{d.file}: excluded in {files.exclusions}", (d.file,), files.exclusions)


def include(files: ReviewFiles, name: str) -> Change:
    """Take a drawing back into training: its exclusion rows removed."""
    d = find(load(files), name)
    before, after = update_rows(files.exclusions, EXCLUSIONS_HEADER, lambda r: _drop(r, d))
    if before == after:
        return Change(f"{d.file}: not excluded; nothing written")
    return Change(f"{d.file}: included again in {files.exclusions}", (d.file,), files.exclusions)
