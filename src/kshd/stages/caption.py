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
from kshd.data.captioning import CaptionSettings, with_trigger, write_info_csv
from kshd.experiments.tracking import TrackingSettings, start_run
from kshd.fileio import write_json
from kshd.stages import ensure_tiny, plain, run, stage_config

log = logging.getLogger(__name__)


def settings_from(c) -> CaptionSettings:
    return CaptionSettings(
        model=c.model,
        prompt=c.prompt,
        do_sample=c.do_sample,
        temperature=c.temperature,
        top_p=c.top_p,
        repetition_penalty=c.repetition_penalty,
        max_new_tokens=c.max_new_tokens,
        batch_size=c.batch_size,
        seed=c.seed,
    )


def log_table(cfg: DictConfig, items: list[Item], prepared: Path, report: dict) -> None:
    """The captions as a wandb table with thumbnails, and the report's numbers."""
    tracking = cfg.tracking
    run = start_run(TrackingSettings.from_config(tracking), "caption", plain(cfg))
    if not run:
        return
    import wandb
    from PIL import Image

    table = wandb.Table(columns=["image", "file", "caption", "source"])
    for item in items[: tracking.table_rows]:
        thumb = Image.open(prepared / item.output)
        thumb.thumbnail((128, 128))
        table.add_data(wandb.Image(thumb), item.file, item.caption, item.source)
    run.log({"caption/table": table} | {f"caption/{k}": v for k, v in report["sources"].items()})
    run.finish()


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "caption")
    c = cfg.caption
    reports = Path(cfg.data.reports_dir)
    prepare = json.loads((reports / "prepare.json").read_text(encoding="utf-8"))
    items = [Item(i["file"], i["output"], i["digest"]) for i in prepare["images"]]
    prepared, info_csv = Path(cfg.data.prepared_dir), Path(cfg.data.info_csv)
    settings = settings_from(c)
    cache = CaptionCache(shared_path(cfg.data.cache_dir) / "captions.jsonl")
    if any(cache.get(f"{settings.fingerprint()}:{i.digest}") is None for i in items):
        ensure_tiny(cfg)
    outcome = assign_captions(items, prepared, read_overrides(Path(c.overrides)), settings, cache)
    rows = [
        (
            Path(os.path.relpath(prepared / i.output, info_csv.parent)).as_posix(),
            with_trigger(i.caption, c.trigger_phrase, c.trigger_position),
        )
        for i in outcome.items
    ]
    write_info_csv(info_csv, rows)
    report = caption_report(outcome, c.model, settings.fingerprint())
    write_json(reports / "captions.json", report)
    log.info("caption: %d captions, sources %s", len(rows), report["sources"])
    log_table(cfg, outcome.items, prepared, report)


if __name__ == "__main__":
    run(main, "caption")
