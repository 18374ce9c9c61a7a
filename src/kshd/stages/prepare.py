"""DVC stage `prepare`: data/raw (+ data/reg) -> data/prepared + data/reports/prepare.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kshd.config.schema import ProjectConfig
from kshd.data.images import IntakeRules
from kshd.data.intake import PrepareReport, prepare_folder, prepare_reg_folder
from kshd.data.near_duplicates import NearDuplicateRules
from kshd.fileio import write_json
from kshd.stages import entry, stage_config


def run(cfg: ProjectConfig) -> PrepareReport:
    """Every raw drawing decoded and resized, or reported with its reason, its near-duplicates
    grouped; the regularization drawings likewise (no near-duplicate check: they are the base
    model's own drawings, not the style taught), reported under `reg`."""
    p, data = cfg.prepare, cfg.data
    intake = {
        "resolution": p.resolution,
        "upscale": p.upscale,
        "rules": IntakeRules.from_settings(p),
    }
    near = NearDuplicateRules.from_settings(p)
    report = prepare_folder(data.raw_dir, data.prepared_dir, **intake, near=near)
    reg = prepare_reg_folder(data.reg_dir, data.prepared_dir, **intake)
    write_json(Path(data.reports_dir) / "prepare.json", report.to_dict() | {"reg": reg.to_dict()})
    return report


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "prepare"))


if __name__ == "__main__":
    entry(main, "prepare")
