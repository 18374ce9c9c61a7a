"""How well, and how fast, do the near-duplicate checks of `prepare` separate copies from
distinct drawings?

Draws the demo world's characters (seeds 0..N-1, in both styles: the same seed in `plain` and
`ksh` are two drawings), makes near-copies of some (kshd_world.near_copies), and prints, at the
conf/ distance (or --distance): how many pairs each stage lets through, the distinct pairs
grouped (false positives) overall and among pairs of one character (same style and attributes,
only the jitter differs), each copy kind's recall, the margins, and the time of each stage.
With --before REV, the same for the module as it was at git revision REV (its confirmation
time for the whole set estimated from a sample of its candidate pairs: it is slow).

    python bench/near_duplicates.py                   # 2,850 seeds x 2 styles, 100 copied
    python bench/near_duplicates.py --before main~3   # and the checks as they were then
"""

from __future__ import annotations

import argparse
import collections
import logging
import subprocess
import sys
import time
import types

import numpy as np
from PIL import Image

from kshd.config.compose import defaults
from kshd.data import near_duplicates as nd
from kshd_world.near_copies import COPIES, MORE_COPIES
from kshd_world.world import STYLES, character, draw

log = logging.getLogger("near_duplicates")


def world(seeds: int) -> tuple[list[Image.Image], list[tuple]]:
    """Every seed drawn in both styles, with its (style, attributes)."""
    drawings, kinds = [], []
    for style in STYLES:
        for seed in range(seeds):
            c = character(seed)
            drawings.append(draw(c, style))
            kinds.append((style, tuple(c.attributes().values())))
    return drawings, kinds


def module_at(rev: str) -> types.ModuleType:
    """kshd.data.near_duplicates as it was at git revision `rev`."""
    path = "src/kshd/data/near_duplicates.py"
    source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    source.check_returncode()
    module = types.ModuleType(f"near_duplicates_{rev}")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source.stdout, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102
    return module


def candidates(m: types.ModuleType, prints: list, distance: int) -> list[tuple[int, int]]:
    """Stage 1 of module m (the current one's, or the 8x8 layout's before it), timed."""
    start = time.perf_counter()
    if hasattr(m, "candidate_pairs"):
        i, j, _ = m.candidate_pairs(prints, distance)
    else:
        i, j, _ = m.hash_pairs(np.array([p.phash for p in prints], np.uint64), distance)
        close = m._layout_close(prints, i, j)
        i, j = i[close], j[close]
    log.info("  candidates: %d pairs (%.1f s)", len(i), time.perf_counter() - start)
    return list(zip(i.tolist(), j.tolist(), strict=True))


def compare(m: types.ModuleType, a, b):
    big, small = (a, b) if a.pixels >= b.pixels else (b, a)
    return m.changed_area(big.thumb, small.thumb)


def distinct_pairs(m, prints, kinds, distance: int, sample: int | None) -> None:
    """The funnel, the false positives (overall and of one character) and the margins."""
    n, total = len(prints), len(prints) * (len(prints) - 1) // 2
    same_total = sum(k * (k - 1) // 2 for k in collections.Counter(kinds).values())
    pairs = candidates(m, prints, distance)
    found = len(pairs)
    if sample is not None and len(pairs) > sample:
        rng = np.random.default_rng(0)
        pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), sample, replace=False))]
    start = time.perf_counter()
    changes = [compare(m, prints[a], prints[b]) for a, b in pairs]
    per_pair = (time.perf_counter() - start) / max(len(pairs), 1)
    log.info(
        "  %d drawings (%d pairs, %d of one character); confirmed %d candidates at %.1f ms a "
        "pair: %d aligned, %d alike in the large", n, total, same_total, len(pairs),
        1000 * per_pair, sum(c.coarse < 1 for c in changes), sum(c.coarse <= 0.02 for c in changes),
    )  # fmt: skip
    if len(pairs) < found:
        log.info(
            "  (a sample of %d: all %d candidates would take ~%.0f s to confirm)",
            len(pairs), found, per_pair * found,
        )  # fmt: skip
    grouped = [p for p, c in zip(pairs, changes, strict=True) if c.same_picture]
    same = sum(kinds[a] == kinds[b] for a, b in grouped)
    log.info(
        "  grouped: %d pairs%s; of one character (same style and attributes): %d of %d; "
        "differing in style or an attribute: %d",
        len(grouped), " (of the sample)" if sample else "", same, same_total, len(grouped) - same,
    )  # fmt: skip
    other = [c for (a, b), c in zip(pairs, changes, strict=True) if kinds[a] != kinds[b]]
    passed = [c.fine for c in other if c.coarse <= m.COARSE_AREA]
    if other and passed:
        log.info(
            "  differing drawings: smallest coarse area %.4f (limit %.4f); where it passed, "
            "smallest fine area %.5f (limit %.5f)",
            min(c.coarse for c in other), m.COARSE_AREA, min(passed), m.CHANGED_AREA,
        )  # fmt: skip


def copy_recall(m, drawings, prints, seeds: int, copied: int, distance: int) -> None:
    """Each copy kind's recall (stage 1 and the confirmation) and its largest values."""
    layout_limit = getattr(m, "LAYOUT_DISTANCE", getattr(m, "COLOUR_DISTANCE", 0.0))
    rms = 1.0 if hasattr(m, "LAYOUT_DISTANCE") else 1 / np.sqrt(prints[0].layout.size)
    for kind, make in (COPIES | MORE_COPIES).items():
        bits, layout, area, found = [], [], [], 0
        for k in [s + o for o in (0, seeds) for s in range(copied)]:
            original, copy = prints[k], m.fingerprint(make(drawings[k]))
            b = int(np.bitwise_count(original.phash ^ copy.phash))
            lay = float(np.linalg.norm(original.layout - copy.layout)) * rms
            s = compare(m, original, copy)
            bits.append(b), layout.append(lay), area.append(s)
            found += b <= distance and lay <= layout_limit and s.same_picture
        log.info(
            "  %-16s recall %5.1f%%  largest: %2d bits, layout %.3f (limit %.3f), changed fine "
            "%.5f coarse %.4f%s", kind, 100 * found / len(bits), max(bits), max(layout),
            layout_limit, max(c.fine for c in area), max(c.coarse for c in area),
            "" if kind in COPIES else "  (beyond the tested kinds)",
        )  # fmt: skip


def measure(m, label: str, drawings, kinds, args, distance: int) -> None:
    log.info("%s:", label)
    start = time.perf_counter()
    prints = [m.fingerprint(d) for d in drawings]
    log.info("  fingerprints: %.1f s", time.perf_counter() - start)
    distinct_pairs(m, prints, kinds, distance, args.sample if m is not nd else None)
    copy_recall(m, drawings, prints, args.seeds, args.copied, distance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2850, help="characters, each in both styles")
    parser.add_argument("--copied", type=int, default=100, help="characters copied per style")
    parser.add_argument(
        "--distance", type=int, help="pHash bits (conf/: prepare.near_duplicate_distance)"
    )
    parser.add_argument("--before", help="also measure the module at this git revision")
    parser.add_argument("--sample", type=int, default=2000, help="--before's pairs confirmed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kshd").setLevel(logging.WARNING)
    distance = (
        args.distance if args.distance is not None else defaults("prepare").near_duplicate_distance
    )
    drawings, kinds = world(args.seeds)
    if args.before:
        measure(module_at(args.before), f"before ({args.before})", drawings, kinds, args, distance)
    measure(nd, "now", drawings, kinds, args, distance)


if __name__ == "__main__":
    main()
