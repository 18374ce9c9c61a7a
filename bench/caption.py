"""Caption throughput: batch 1 vs batch N, and what a rerun after adding one drawing costs.

    python bench/caption.py                       # tiny local BLIP-2 (CPU, no network)
    python bench/caption.py --model Salesforce/blip2-opt-2.7b --images 256   # on a GPU

Prints ratios measured side by side in one run; absolute seconds on a shared machine mean little.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kshd.config.compose import defaults
from kshd.config.schema_caption import CaptionSettings
from kshd.data.caption_cache import CaptionCache
from kshd.data.caption_sources import Item, assign_captions
from kshd_world.tiny import build_tiny_models


def drawings(folder: Path, n: int, start: int = 0) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(start, start + n):
        img = np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
        items.append(Item(f"{i}.png", f"{i}.png", f"{i:064x}"))
    return items


def timed_run(items: list[Item], folder: Path, settings: CaptionSettings, cache: Path) -> float:
    start = time.perf_counter()
    assign_captions(items, folder, {}, settings, CaptionCache(cache))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="BLIP-2 id or folder (default: a tiny local one)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=20)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-caption-"))
    model = args.model or str(build_tiny_models(work / "tiny")["blip2"])
    items = drawings(work / "img", args.images)

    def settings(batch: int) -> CaptionSettings:
        return defaults(
            "caption", model=model, batch_size=batch, max_new_tokens=args.max_new_tokens
        )

    t1 = timed_run(items, work / "img", settings(1), work / "c1.jsonl")
    tn = timed_run(items, work / "img", settings(args.batch), work / "cn.jsonl")
    added = items + drawings(work / "img", 1, start=args.images)
    t_inc = timed_run(added, work / "img", settings(args.batch), work / "cn.jsonl")
    t_none = timed_run(added, work / "img", settings(args.batch), work / "cn.jsonl")
    print(f"model: {model}\nimages: {args.images}, max_new_tokens: {args.max_new_tokens}")
    print(f"batch 1        : {args.images / t1:8.2f} images/s (model load included)")
    print(f"batch {args.batch:<9d}: {args.images / tn:8.2f} images/s (model load included)")
    print(f"speed-up batch {args.batch} vs 1: {t1 / tn:.2f}x")
    print(f"rerun after adding 1 drawing: {t_inc / tn:.3f} of a full run ({tn / t_inc:.1f}x less)")
    print(f"rerun with nothing new (no model load): {t_none / tn:.4f} of a full run")


if __name__ == "__main__":
    main()
