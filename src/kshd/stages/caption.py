"""DVC stage `caption`: data/prepared -> data/info.csv (BLIP-2 caption + trigger phrase)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from kshd.captioning import CaptionSettings, caption_files, with_trigger, write_info_csv
from kshd.fileio import write_json
from kshd.stages import ensure_tiny, stage_config


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "caption")
    c = cfg.caption
    report = json.loads((Path(cfg.data.reports_dir) / "prepare.json").read_text(encoding="utf-8"))
    prepared = Path(cfg.data.prepared_dir)
    paths = [prepared / item["output"] for item in report["images"]]
    ensure_tiny(cfg)
    settings = CaptionSettings(
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
    captions = caption_files(paths, settings)
    info_csv = Path(cfg.data.info_csv)
    rows = [
        (
            Path(os.path.relpath(p, info_csv.parent)).as_posix(),
            with_trigger(text, c.trigger_phrase, c.trigger_position),
        )
        for p, text in zip(paths, captions, strict=True)
    ]
    write_info_csv(info_csv, rows)
    write_json(
        Path(cfg.data.reports_dir) / "captions.json",
        {
            "captions": len(rows),
            "sources": {"blip2": len(rows)},
            "empty": sum(1 for t in captions if not t),
            "model": c.model,
        },
    )


if __name__ == "__main__":
    main()
