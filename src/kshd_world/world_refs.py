"""Folders of demo-world drawings: style references, and regularization drawings with captions.

`make samples` writes the demo's `data/style_refs/` with it (its `evaluate.style_references`):
many characters in the KSH style, so that `style_similarity` measures the style rather than which
few characters happen to be held out. And `data/sample_reg/` (the demo's `data.reg_dir`): plain
drawings, the base's own style, each with a kohya-style `<name>.txt` caption without the trigger
phrase. Apart from kshd_world.world, whose bytes the world models' manifest hashes: this file
decides no weights.

    python -m kshd_world.world_refs OUT -n 64 --size 128 --seed 10100 [--style ksh] [--captions]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kshd_world.world import STYLES, drawings

log = logging.getLogger(__name__)


def write_references(
    out_dir: str | Path, n: int, style: str, size: int, first_seed: int, captions: bool = False
) -> Path:
    """n drawings of seeds first_seed.. as out_dir/<style>-<seed>.png (+ .txt captions)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(first_seed, first_seed + n)
    for seed, (img, caption, *_) in zip(seeds, drawings(seeds, style, (size, size)), strict=True):
        img.save(out / f"{style}-{seed:06d}.png", format="PNG")
        if captions:
            (out / f"{style}-{seed:06d}.txt").write_text(caption + "\n", encoding="utf-8")
    log.info("wrote %d %s reference drawings (%d px) to %s", n, style, size, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kshd_world.world_refs", description=__doc__)
    p.add_argument("out", help="folder to write <style>-<seed>.png into")
    p.add_argument("-n", type=int, default=64, help="number of drawings (default 64)")
    p.add_argument("--style", choices=STYLES, default="ksh")
    p.add_argument("--size", type=int, default=128, help="width and height in pixels")
    p.add_argument("--seed", type=int, default=10_100, help="first seed; drawing i uses seed+i")
    p.add_argument("--captions", action="store_true", help="a <name>.txt caption beside each")
    args = p.parse_args(argv)
    if args.n < 1 or args.size < 32:
        p.error("-n must be at least 1 and --size at least 32")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_references(args.out, args.n, args.style, args.size, args.seed, args.captions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
