"""Where each caption comes from: a reviewed override, a sidecar .txt, or BLIP-2 (cached or new).

Kohya users keep a `<name>.txt` beside each drawing; reviewers fix captions in an overrides CSV that
survives reruns. Every image gets exactly one caption and the report says from where.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kshd.data.caption_cache import CaptionCache
from kshd.data.captioning import CaptionSettings, caption_missing, clean_caption, read_info_csv

log = logging.getLogger(__name__)

OVERRIDE, SIDECAR, CACHED, BLIP2 = "override", "sidecar", "blip2_cached", "blip2_new"


@dataclass
class Item:
    """One accepted drawing: its raw name, prepared file and pixel digest (from prepare.json)."""

    file: str
    output: str
    digest: str
    caption: str = ""
    source: str = ""


@dataclass
class CaptionOutcome:
    items: list[Item]
    images_per_s: float = 0.0
    unmatched_overrides: list[str] = field(default_factory=list)


def read_overrides(path: Path) -> dict[str, str]:
    """`image,text` rows keyed by raw file name or prepared name; a missing file means none."""
    if not path.is_file():
        return {}
    return {image.strip(): text.strip() for image, text in read_info_csv(path)}


def read_sidecar(prepared_dir: Path, output: str) -> str | None:
    path = (prepared_dir / output).with_suffix(".txt")
    if not path.is_file():
        return None
    return clean_caption(path.read_text(encoding="utf-8-sig"), "")


def assign_captions(
    items: list[Item],
    prepared_dir: Path,
    overrides: dict[str, str],
    settings: CaptionSettings,
    cache: CaptionCache,
) -> CaptionOutcome:
    """Give every item a caption, captioning with BLIP-2 only what no other source covers."""
    fp = settings.fingerprint()
    used: set[str] = set()
    todo = []
    for item in items:
        for name in (item.file, item.output):
            if name in overrides:
                item.caption, item.source = overrides[name], OVERRIDE
                used.add(name)
                break
        else:
            sidecar = read_sidecar(prepared_dir, item.output)
            if sidecar is not None:
                item.caption, item.source = sidecar, SIDECAR
            elif (hit := cache.get(f"{fp}:{item.digest}")) is not None:
                item.caption, item.source = hit, CACHED
            else:
                todo.append(item)
    rate = caption_missing(
        [(f"{fp}:{i.digest}", prepared_dir / i.output) for i in todo], settings, cache
    )
    for item in todo:
        item.caption, item.source = cache.get(f"{fp}:{item.digest}") or "", BLIP2
    unmatched = sorted(set(overrides) - used)
    for name in unmatched:
        log.warning("caption override for %r matches no accepted drawing", name)
    return CaptionOutcome(items, rate, unmatched)


def caption_report(outcome: CaptionOutcome, model: str, fingerprint: str) -> dict:
    """Counts per source, lengths, empty and duplicate captions, the most frequent words."""
    items = outcome.items
    lengths = [len(i.caption.split()) for i in items] or [0]
    by_text: dict[str, list[str]] = {}
    for i in items:
        if i.caption:
            by_text.setdefault(i.caption, []).append(i.file)
    words = Counter(w for i in items for w in re.findall(r"\w+", i.caption.lower()))
    return {
        "captions": len(items),
        "sources": {
            s: sum(i.source == s for i in items) for s in (OVERRIDE, SIDECAR, CACHED, BLIP2)
        },
        "captioned_now": sum(i.source == BLIP2 for i in items),
        "images_per_s": round(outcome.images_per_s, 3),
        "length_words": {
            "min": min(lengths),
            "median": statistics.median(lengths),
            "mean": round(statistics.fmean(lengths), 2),
            "max": max(lengths),
        },
        "empty": [i.file for i in items if not i.caption],
        "duplicates": [{"text": t, "files": f} for t, f in by_text.items() if len(f) > 1],
        "top_words": words.most_common(20),
        "unmatched_overrides": outcome.unmatched_overrides,
        "model": model,
        "settings_fingerprint": fingerprint,
    }
