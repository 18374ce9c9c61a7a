"""How well do the near-duplicate checks of `prepare` separate copies from distinct drawings?

Draws the demo world's characters (seeds 0..N-1, in both styles: the same seed in `plain` and
`ksh` are two drawings), makes near-copies of some (kshd_world.near_copies), and prints, at the
conf/ distance (or --distance): the distinct pairs grouped (false positives) out of all pairs,
each copy kind's recall, the margins (each stage's smallest value between distinct drawings
against its largest between a copy and its original) and the time to check --scale drawings.

    python bench/near_duplicates.py                 # 500 seeds x 2 styles, 100 copied: ~1 min
    python bench/near_duplicates.py --scale 5700    # and the time for 5,700 drawings
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from kshd.config.compose import defaults
from kshd.data import near_duplicates as nd
from kshd_world.near_copies import COPIES, MORE_COPIES
from kshd_world.world import STYLES, character, draw

log = logging.getLogger("near_duplicates")


def world(seeds: int) -> tuple[list[str], list[nd.Fingerprint], list[tuple]]:
    """Names, fingerprints and (style, attributes) of every seed drawn in both styles."""
    names, prints, kinds = [], [], []
    for style in STYLES:
        for seed in range(seeds):
            c = character(seed)
            names.append(f"{style}-{seed:05d}")
            prints.append(nd.fingerprint(draw(c, style)))
            kinds.append((style, tuple(c.attributes().values())))
    return names, prints, kinds


def distinct_pairs(prints: list[nd.Fingerprint], kinds: list[tuple], distance: int) -> None:
    """False positives among the distinct drawings, and how close the closest candidates came."""
    n = len(prints)
    i, j, bits = nd.hash_pairs(np.array([p.phash for p in prints], np.uint64), distance)
    close = nd._layout_close(prints, i, j)
    pairs = list(zip(i[close].tolist(), j[close].tolist(), strict=True))
    start = time.perf_counter()
    areas = [nd.changed_area(prints[a].thumb, prints[b].thumb) for a, b in pairs]
    per_pair = (time.perf_counter() - start) / max(len(pairs), 1)
    grouped = [p for p, s in zip(pairs, areas, strict=True) if s.same_picture]
    same = sum(kinds[a] == kinds[b] for a, b in grouped)
    total = n * (n - 1) // 2
    log.info(
        "distinct drawings: %d (%d pairs); within %d bits: %d; colour layout close: %d "
        "(confirmed in %.1f ms a pair)",
        n, total, distance, len(i), len(pairs), 1000 * per_pair,
    )  # fmt: skip
    log.info(
        "  grouped (false positives): %d pairs = %.2e of all pairs (%d of one character: "
        "same style and attributes, poses a crop apart)",
        len(grouped), len(grouped) / total, same,
    )  # fmt: skip
    other = [s for (a, b), s in zip(pairs, areas, strict=True) if kinds[a] != kinds[b]]
    if other:
        fine = min(c.fine for c in other if c.coarse <= nd.COARSE_AREA)
        log.info(
            "  between drawings that differ in style or an attribute: smallest coarse changed "
            "area %.4f (limit %.4f); where that passed, smallest fine changed area %.5f (limit "
            "%.5f)", min(c.coarse for c in other), nd.COARSE_AREA, fine, nd.CHANGED_AREA,
        )  # fmt: skip


def copy_recall(names, prints, seeds: int, copied: int, distance: int) -> None:
    kinds = COPIES | MORE_COPIES
    for kind, make in kinds.items():
        bits, layout, area, found = [], [], [], 0
        for style_index, style in enumerate(STYLES):
            for seed in range(copied):
                k = style_index * seeds + seed
                original = draw(character(seed), style)
                copy = nd.fingerprint(make(original))
                pair = [prints[k], copy]
                b = int(np.bitwise_count(pair[0].phash ^ pair[1].phash))
                lay = float(np.sqrt(((pair[0].layout - pair[1].layout) ** 2).mean()))
                big, small = (0, 1) if pair[0].pixels >= pair[1].pixels else (1, 0)
                s = nd.changed_area(pair[big].thumb, pair[small].thumb)
                bits.append(b), layout.append(lay), area.append(s)
                found += b <= distance and lay <= nd.COLOUR_DISTANCE and s.same_picture
        log.info(
            "%-16s recall %5.1f%%  largest: %2d bits, layout %.2f, changed fine %.5f coarse %.4f%s",
            kind,
            100 * found / len(bits),
            max(bits),
            max(layout),
            max(c.fine for c in area),
            max(c.coarse for c in area),
            "" if kind in COPIES else "  (beyond the tested kinds)",
        )


def timing(scale: int, distance: int) -> None:
    start = time.perf_counter()
    names, prints, _ = world(scale // 2)
    drawn = time.perf_counter()
    groups = nd.find_groups(names, prints, distance)
    done = time.perf_counter()
    log.info(
        "%d drawings: drawn, fingerprinted in %.1f s; compared, grouped in %.1f s (%d groups)",
        len(names),
        drawn - start,
        done - drawn,
        len(groups),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500, help="characters, each in both styles")
    parser.add_argument("--copied", type=int, default=100, help="characters copied per style")
    parser.add_argument(
        "--distance", type=int, help="pHash bits (conf/: prepare.near_duplicate_distance)"
    )
    parser.add_argument("--scale", type=int, help="also time the check on this many drawings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    distance = (
        args.distance if args.distance is not None else defaults("prepare").near_duplicate_distance
    )
    names, prints, kinds = world(args.seeds)
    distinct_pairs(prints, kinds, distance)
    copy_recall(names, prints, args.seeds, args.copied, distance)
    if args.scale:
        timing(args.scale, distance)


if __name__ == "__main__":
    main()
