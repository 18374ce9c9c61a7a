"""DVC stage `caption`: data/prepared -> data/info.csv (caption + trigger phrase) and a report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from kshd.config import shared_path
from kshd.data.caption_cache import CaptionCache
from kshd.data.caption_sources import Item, assign_captions, caption_report, read_overrides
from kshd.data.captioning import with_trigger, write_info_csv
from kshd.experiments.tracking import start_run
from kshd.fileio import write_json
from kshd.schema import group
from kshd.stages import entry, plain, require_model, resolve_models, stage_config

log = logging.getLogger(__name__)


def log_table(cfg: DictConfig, items: list[Item], prepared: Path, report: dict) -> None:
    """The captions as a wandb table with thumbnails, and the report's numbers."""
    tracking = group(cfg, "tracking")
    wb = start_run(tracking, "caption", plain(cfg))
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


def run(cfg: DictConfig) -> dict:
    """A caption per prepared drawing (reviewed, sidecar or BLIP-2) in info.csv; the report."""
    resolve_models(cfg)
    settings, data = group(cfg, "caption"), group(cfg, "data")
    reports = Path(data.reports_dir)
    prepare = json.loads((reports / "prepare.json").read_text(encoding="utf-8"))
    items = [Item(i["file"], i["output"], i["digest"]) for i in prepare["images"]]
    prepared, info_csv = Path(data.prepared_dir), Path(data.info_csv)
    cache = CaptionCache(shared_path(data.cache_dir) / "captions.jsonl")
    if any(cache.get(f"{settings.fingerprint()}:{i.digest}") is None for i in items):
        require_model(cfg, "caption.model")
    overrides = read_overrides(Path(settings.overrides))
    outcome = assign_captions(items, prepared, overrides, settings, cache)
    rows = [
        (
            Path(os.path.relpath(prepared / i.output, info_csv.parent)).as_posix(),
            with_trigger(i.caption, settings.trigger_phrase, settings.trigger_position),
        )
        for i in outcome.items
    ]
    write_info_csv(info_csv, rows)
    report = caption_report(outcome, settings.model, settings.fingerprint())
    write_json(reports / "captions.json", report)
    log.info("caption: %d captions, sources %s", len(rows), report["sources"])
    log_table(cfg, outcome.items, prepared, report)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "caption"))


if __name__ == "__main__":
    entry(main, "caption")
