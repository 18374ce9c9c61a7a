"""DVC stage `caption`: data/prepared -> data/info.csv (caption + trigger phrase), data/reg_info.csv
(the regularization drawings' captions, no trigger) and a report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kshd.config.compose import shared_path
from kshd.config.fill import as_plain
from kshd.config.schema import ProjectConfig
from kshd.data.caption_cache import CaptionCache
from kshd.data.caption_sources import Item, assign_captions, caption_report, read_overrides
from kshd.data.captioning import with_trigger, write_info_csv
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
    """A caption per prepared drawing (reviewed, sidecar or BLIP-2) in info.csv, with the trigger;
    the regularization drawings' in reg_info.csv, without it; the report."""
    resolve_models(cfg)
    settings, data = cfg.caption, cfg.data
    reports = Path(data.reports_dir)
    prepare = json.loads((reports / "prepare.json").read_text(encoding="utf-8"))
    items = [Item(i["file"], i["output"], i["digest"]) for i in prepare["images"]]
    reg = [
        Item(i["file"], i["output"], i["digest"]) for i in prepare.get("reg", {}).get("images", [])
    ]
    prepared = Path(data.prepared_dir)
    cache = CaptionCache(shared_path(data.cache_dir) / "captions.jsonl")
    if any(cache.get(f"{settings.fingerprint()}:{i.digest}") is None for i in items + reg):
        require_model(cfg, "caption.model")
    overrides = read_overrides(Path(settings.overrides))
    outcome = assign_captions(items + reg, prepared, overrides, settings, cache)
    trigger = (settings.trigger_phrase, settings.trigger_position)
    rows = _csv_rows(outcome.items[: len(items)], prepared, Path(data.info_csv), trigger)
    reg_rows = _csv_rows(outcome.items[len(items) :], prepared, Path(data.reg_info_csv), None)
    write_info_csv(data.info_csv, rows)
    write_info_csv(data.reg_info_csv, reg_rows)
    _warn_trigger_in_reg(outcome.items[len(items) :], settings.trigger_phrase)
    report = caption_report(
        replace(outcome, items=outcome.items[: len(items)]), settings.model, settings.fingerprint()
    )
    if reg:
        report["reg"] = caption_report(
            replace(outcome, items=outcome.items[len(items) :]),
            settings.model,
            settings.fingerprint(),
        )
    write_json(reports / "captions.json", report)
    log.info(
        "caption: %d captions, sources %s; %d regularization drawings",
        len(rows),
        report["sources"],
        len(reg_rows),
    )
    log_table(cfg, outcome.items, prepared, report)
    return report


def _csv_rows(
    items: list[Item], prepared: Path, csv_path: Path, trigger: tuple[str, str] | None
) -> list[tuple[str, str]]:
    """(image path relative to the CSV, caption with the trigger phrase when given)."""
    return [
        (
            Path(os.path.relpath(prepared / i.output, csv_path.parent)).as_posix(),
            with_trigger(i.caption, *trigger) if trigger else i.caption,
        )
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


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "caption"))


if __name__ == "__main__":
    entry(main, "caption")
