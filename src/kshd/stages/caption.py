"""DVC stage `caption`: data/prepared -> data/info.csv (caption + trigger phrase), data/reg_info.csv
(the regularization drawings' captions, no trigger), a report, and per drawing its caption and
source for review (caption_items.json). The captions the overrides and sidecars leave come from
the captioner `caption.kind` names (kshd.captioners); the drawings the exclusions name are
captioned (for review) but left out of both CSV files."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from kshd.captioners.registry import captioner_class
from kshd.config.compose import shared_path
from kshd.config.fill import as_plain
from kshd.config.schema import ProjectConfig
from kshd.data.caption_cache import CaptionCache
from kshd.data.caption_lists import ITEMS_FILE, read_exclusions
from kshd.data.caption_sources import Item, assign_captions, caption_report, read_overrides
from kshd.data.captioning import write_info_csv
from kshd.experiments.tracking import start_run
from kshd.fileio import write_json
from kshd.stages import entry, require_model, resolve_models, stage_config

log = logging.getLogger(__name__)


def log_table(cfg: ProjectConfig, items: list[Item], prepared: Path, report: dict) -> None:
    """The captions as a wandb table with thumbnails, and the report's numbers."""
    tracking = cfg.tracking
    wb = start_run(tracking, "caption", as_plain(cfg))
    if not wb:
        return
    import wandb
    from PIL import Image

    table = wandb.Table(columns=["image", "file", "caption", "source"])
    for item in items[: tracking.table_rows]:
        thumb = Image.open(prepared / item.output)
        thumb.thumbnail((128, 128))
        table.add_data(wandb.Image(thumb), item.file, item.caption, item.source)
    wb.log({"caption/table": table} | {f"caption/{k}": v for k, v in report["sources"].items()})
    wb.finish()


def run(cfg: ProjectConfig) -> dict:
    """A caption per prepared drawing (reviewed, sidecar or the captioner's) in info.csv, with the
    trigger; the regularization drawings' in reg_info.csv, without it; the report."""
    settings, data = cfg.caption, cfg.data
    captioner = captioner_class(settings)
    resolve_models(cfg, [f"caption.{key}" for key in captioner.model_keys])
    reports = Path(data.reports_dir)
    prepare = json.loads((reports / "prepare.json").read_text(encoding="utf-8"))
    items = [Item(i["file"], i["output"], i["digest"]) for i in prepare["images"]]
    reg = [
        Item(i["file"], i["output"], i["digest"]) for i in prepare.get("reg", {}).get("images", [])
    ]
    prepared = Path(data.prepared_dir)
    cache = CaptionCache(shared_path(data.cache_dir) / "captions.jsonl")
    identity = captioner.identity(settings)
    if any(cache.get(f"{identity}:{i.digest}") is None for i in items + reg):
        for key, marker in captioner.model_keys.items():
            require_model(cfg, f"caption.{key}", marker)
    overrides = read_overrides(Path(settings.overrides))
    exclusions = read_exclusions(settings.exclusions)
    outcome = assign_captions(items + reg, prepared, overrides, settings, cache)
    write_json(reports / ITEMS_FILE, _review_items(outcome.items, len(items), exclusions))
    train, left_out = _apply_exclusions(outcome.items[: len(items)], exclusions)
    regular, reg_left_out = _apply_exclusions(outcome.items[len(items) :], exclusions)
    unmatched = _unmatched_exclusions(exclusions, outcome.items, settings.exclusions)
    rows = _csv_rows(
        train, prepared, Path(data.info_csv), partial(captioner.place_trigger, settings)
    )
    reg_rows = _csv_rows(regular, prepared, Path(data.reg_info_csv), str)  # no trigger
    write_info_csv(data.info_csv, rows)
    write_info_csv(data.reg_info_csv, reg_rows)
    _warn_trigger_in_reg(regular, settings.trigger_phrase)
    made = reports / "captions.json"
    _warn_empty(train, "drawings (trained on the trigger phrase alone)", settings.overrides, made)
    _warn_empty(regular, "regularization drawings", settings.overrides, made)
    report = caption_report(replace(outcome, items=train), settings)
    report |= {"excluded": left_out, "unmatched_exclusions": unmatched}
    if reg:
        report["reg"] = caption_report(replace(outcome, items=regular), settings)
        report["reg"]["excluded"] = reg_left_out
    write_json(made, report)
    log.info(
        "caption: %d captions, sources %s; %d regularization drawings; %d excluded",
        len(rows),
        report["sources"],
        len(reg_rows),
        len(left_out) + len(reg_left_out),
    )
    log_table(cfg, outcome.items, prepared, report)
    return report


def _excluded_by(item: Item, exclusions: dict[str, str]) -> str | None:
    """The reason the exclusions give for the drawing (by raw name first), None if kept."""
    for name in (item.file, item.output):
        if name in exclusions:
            return exclusions[name]
    return None


def _apply_exclusions(items: list[Item], exclusions: dict[str, str]) -> tuple[list[Item], list]:
    """(the items kept, `{file, reason}` of each one left out)."""
    kept = [i for i in items if _excluded_by(i, exclusions) is None]
    out = [
        {"file": i.file, "reason": r}
        for i in items
        if (r := _excluded_by(i, exclusions)) is not None
    ]
    return kept, out


def _unmatched_exclusions(exclusions: dict[str, str], items: list[Item], path: str) -> list[str]:
    """Exclusion rows that name no drawing (renamed or deleted since): warned, as unmatched
    overrides are, and listed in the report."""
    names = {n for i in items for n in (i.file, i.output)}
    unmatched = sorted(set(exclusions) - names)
    for name in unmatched:
        log.warning("caption exclusion for %r (%s) matches no accepted drawing", name, path)
    return unmatched


def _review_items(items: list[Item], n_train: int, exclusions: dict[str, str]) -> dict:
    """Per drawing what caption review shows: raw and prepared name, the caption without the
    trigger, its source, train or reg, and whether the exclusions leave it out."""
    return {
        "drawings": [
            {"file": i.file, "output": i.output, "caption": i.caption, "source": i.source,
             "split": "train" if n < n_train else "reg",
             "excluded": _excluded_by(i, exclusions) is not None}
            for n, i in enumerate(items)
        ]
    }  # fmt: skip


def _csv_rows(
    items: list[Item], prepared: Path, csv_path: Path, text: Callable[[str], str]
) -> list[tuple[str, str]]:
    """(image path relative to the CSV, the caption as `text` makes it: with the trigger or not)."""
    return [
        (Path(os.path.relpath(prepared / i.output, csv_path.parent)).as_posix(), text(i.caption))
        for i in items
    ]


def _warn_trigger_in_reg(reg: list[Item], trigger: str) -> None:
    """A regularization caption that names the trigger teaches the opposite of what it is for."""
    named = [i.file for i in reg if trigger and trigger.lower() in i.caption.lower()]
    if named:
        log.warning(
            "caption: %d regularization drawings' captions contain the trigger phrase %r (%s): "
            "they are meant to show the base's style without it; fix their captions",
            len(named),
            trigger,
            ", ".join(named[:5]),
        )


def _warn_empty(items: list[Item], what: str, overrides: str, report: Path) -> None:
    """An empty caption trains on the trigger phrase alone (as kohya trains an image without a
    caption file): named, with the way to give it one."""
    empty = [i.file for i in items if not i.caption]
    if empty:
        log.warning(
            "caption: %d %s have an empty caption (%s): give each a row in %s or a "
            "<drawing>.txt beside it; %s lists them all under `empty`",
            len(empty),
            what,
            ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""),
            overrides,
            report,
        )


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "caption"))


if __name__ == "__main__":
    entry(main, "caption")
