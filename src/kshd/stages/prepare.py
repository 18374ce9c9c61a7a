"""DVC stage `prepare`: data/raw -> data/prepared + data/reports/prepare.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kshd.data.images import IntakeRules
from kshd.data.intake import prepare_folder
from kshd.fileio import write_json
from kshd.stages import run, stage_config


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "prepare")
    p = cfg.prepare
    rules = IntakeRules(
        background=tuple(p.background), min_side=p.min_side, max_pixels=p.max_pixels
    )
    report = prepare_folder(
        cfg.data.raw_dir,
        cfg.data.prepared_dir,
        resolution=p.resolution,
        upscale=p.upscale,
        rules=rules,
    )
    write_json(Path(cfg.data.reports_dir) / "prepare.json", report.to_dict())


if __name__ == "__main__":
    run(main, "prepare")
