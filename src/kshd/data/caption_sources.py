"""Where each caption comes from: a reviewed override, a sidecar .txt, or the captioner that
`caption.kind` names (cached or new).

Kohya users keep a `<name>.txt` beside each drawing; reviewers fix captions in an overrides CSV that
survives reruns. Every image gets exactly one caption and the report says from where.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from kshd.captioners.base import clean_caption
from kshd.captioners.registry import caption_identity, captioner_class
from kshd.config.schema_caption import CaptionSettings
from kshd.data.caption_cache import CaptionCache
from kshd.data.captioning import read_info_csv

log = logging.getLogger(__name__)

OVERRIDE, SIDECAR = "override", "sidecar"


def cached_source(kind: str) -> str:
    """The report's name for captions the cache held: `blip2_cached` for `caption.kind=blip2`."""
    return f"{kind}_cached"


def new_source(kind: str) -> str:
    """The report's name for captions made in this run: `blip2_new` for `caption.kind=blip2`."""
    return f"{kind}_new"


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


def caption_missing(
    todo: Sequence[tuple[str, Path]], settings: CaptionSettings, cache: CaptionCache
) -> float:
    """Caption (key, image) pairs in batches, saving each batch to the cache; returns images/s.

    The captioner is made (its model loaded) only when something needs captioning. Batches are
    formed in the given order, so a run resumed after a kill makes the same batches and
    captions as an unbroken one.
    """
    if not todo:
        return 0.0
    captioner = captioner_class(settings)(settings)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    for i in range(0, len(todo), settings.batch_size):
        chunk = todo[i : i + settings.batch_size]
        images = [Image.open(path).convert("RGB") for _, path in chunk]
        keys = [key for key, _ in chunk]
        cache.add(dict(zip(keys, captioner.caption(images, keys), strict=True)))
        bar.update(len(chunk))
    bar.close()
    rate = len(todo) / max(time.perf_counter() - start, 1e-9)
    log.info("captioned %d images with caption.kind=%s (%.2f images/s)", len(todo), settings.kind,
             rate)  # fmt: skip
    return rate


def assign_captions(
    items: list[Item],
    prepared_dir: Path,
    overrides: dict[str, str],
    settings: CaptionSettings,
    cache: CaptionCache,
) -> CaptionOutcome:
    """Give every item a caption, running the captioner only on what no other source covers."""
    identity = caption_identity(settings)
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
            elif (hit := cache.get(f"{identity}:{item.digest}")) is not None:
                item.caption, item.source = hit, cached_source(settings.kind)
            else:
                todo.append(item)
    rate = caption_missing(
        [(f"{identity}:{i.digest}", prepared_dir / i.output) for i in todo], settings, cache
    )
    for item in todo:
        item.caption = cache.get(f"{identity}:{item.digest}") or ""
        item.source = new_source(settings.kind)
    unmatched = sorted(set(overrides) - used)
    for name in unmatched:
        log.warning("caption override for %r matches no accepted drawing", name)
    return CaptionOutcome(items, rate, unmatched)


def caption_report(outcome: CaptionOutcome, settings: CaptionSettings) -> dict:
    """Counts per source, lengths, empty and duplicate captions, the most frequent words."""
    items = outcome.items
    lengths = [len(i.caption.split()) for i in items] or [0]
    by_text: dict[str, list[str]] = {}
    for i in items:
        if i.caption:
            by_text.setdefault(i.caption, []).append(i.file)
    words = Counter(w for i in items for w in re.findall(r"\w+", i.caption.lower()))
    sources = (OVERRIDE, SIDECAR, cached_source(settings.kind), new_source(settings.kind))
    models = {key: getattr(settings, key) for key in captioner_class(settings).model_keys}
    return {
        "captions": len(items),
        "sources": {s: sum(i.source == s for i in items) for s in sources},
        "captioned_now": sum(i.source == new_source(settings.kind) for i in items),
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
        "captioner": settings.kind,
        "model": models.get("model"),
        "settings_fingerprint": caption_identity(settings),
    }
