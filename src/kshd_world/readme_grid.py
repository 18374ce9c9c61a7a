"""`make readme-grid`: docs/demo-grid.png, the README's picture, from the demo's own grids.

The evaluation's grids of every prompt (reports/grids/prompt-*.png: rows base, LoRA at each
strength, no trigger; columns seeds) side by side, quantized to 256 colours so the committed file
stays small. Nothing is drawn here: every pixel comes from `make demo`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)


def side_by_side(grids: list[Path], out: Path, gap: int = 10) -> Path:
    """The grids in a row, `gap` white pixels apart, as a 256-colour PNG."""
    if not grids:
        raise FileNotFoundError("no reports/grids/prompt-*.png: run `make demo` first")
    images = [Image.open(p).convert("RGB") for p in grids]
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    sheet = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out, optimize=True)
    log.info("wrote %s from %d grids", out, len(images))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kshd_world.readme_grid", description=__doc__)
    p.add_argument("--grids", type=Path, default=Path("reports/grids"))
    p.add_argument("--out", type=Path, default=Path("docs/demo-grid.png"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    side_by_side(sorted(args.grids.glob("prompt-*.png")), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
