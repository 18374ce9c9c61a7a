"""Draw the bundled sample drawings: simple anime-style line art in KSH's manner, deterministic.

Girls get big eyes with thick eyeliner, boys smaller eyes with thin lines; clean lines, flat
shading. Like the artist's real files, most are RGBA PNGs on a transparent ground, and several
have Korean names. `python -m kshd.data.samples data/samples` redraws them.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

HAIR = [
    (250, 220, 120),
    (60, 40, 30),
    (200, 90, 60),
    (120, 150, 230),
    (30, 30, 40),
    (240, 170, 200),
]
EYES = [(60, 160, 90), (80, 110, 200), (150, 80, 50), (170, 60, 120)]


@dataclass(frozen=True)
class Sample:
    name: str
    girl: bool
    size: tuple[int, int] = (256, 256)
    transparent: bool = True


SAMPLES = [
    Sample("소녀_01.png", girl=True),
    Sample("소녀_02.png", girl=True),
    Sample("소년_01.png", girl=False),
    Sample("girl_smile.png", girl=True),
    Sample("girl_side.png", girl=True, size=(256, 320)),
    Sample("boy_hoodie.png", girl=False),
    Sample("boy_school.png", girl=False, transparent=False),
    Sample("girl_twintails.png", girl=True, transparent=False),
    Sample("교복_소녀.png", girl=True),
    Sample("boy_wide.png", girl=False, size=(320, 256)),
]


def _eye(d: ImageDraw.ImageDraw, cx: int, cy: int, s: float, girl: bool, iris: tuple) -> None:
    w, h = (int(22 * s), int(26 * s)) if girl else (int(16 * s), int(11 * s))
    d.ellipse((cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2), fill="white")
    r = int(h * 0.45)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=iris)
    d.ellipse((cx - r // 3, cy - r // 3 - 2, cx + r // 6, cy), fill="white")  # highlight
    liner = max(2, int((5 if girl else 2) * s))
    d.arc(
        (cx - w // 2 - 2, cy - h // 2 - 2, cx + w // 2 + 2, cy + h // 2 + 4),
        190,
        350,
        fill="black",
        width=liner,
    )
    if girl:
        d.line(
            (cx + w // 2, cy - h // 4, cx + w // 2 + int(6 * s), cy - h // 2),
            fill="black",
            width=liner,
        )


def draw(sample: Sample, seed: int) -> Image.Image:
    rng = random.Random(seed)
    w, h = sample.size
    ground = (0, 0, 0, 0) if sample.transparent else (255, 252, 245, 255)
    img = Image.new("RGBA", sample.size, ground)
    d = ImageDraw.Draw(img)
    s = min(w, h) / 256
    cx, cy = w // 2 + rng.randint(-10, 10), h // 2 + rng.randint(0, 15)
    hair, iris = rng.choice(HAIR), rng.choice(EYES)
    fw, fh = int(110 * s), int(130 * s)
    back = int(fh * (1.25 if sample.girl else 0.95))
    d.ellipse(
        (cx - fw // 2 - 18, cy - fh // 2 - 25, cx + fw // 2 + 18, cy - fh // 2 + back),
        fill=hair,
        outline="black",
        width=3,
    )  # hair behind the face
    d.polygon(
        [
            (cx - fw // 2, cy - 10),
            (cx + fw // 2, cy - 10),
            (cx + 8, cy + fh // 2),
            (cx - 8, cy + fh // 2),
        ],
        fill=(255, 228, 210),
        outline="black",
    )
    d.ellipse(
        (cx - fw // 2, cy - fh // 2, cx + fw // 2, cy + fh // 4),
        fill=(255, 228, 210),
        outline="black",
        width=3,
    )
    d.chord(
        (cx - fw // 2 - 6, cy - fh // 2 - 20, cx + fw // 2 + 6, cy - fh // 6),
        180,
        360,
        fill=hair,
        outline="black",
        width=3,
    )  # fringe
    dx = int(24 * s)
    for ex in (cx - dx, cx + dx):
        _eye(d, ex, cy + int(8 * s), s, sample.girl, iris)
    d.arc((cx - 8, cy + int(34 * s), cx + 8, cy + int(44 * s)), 20, 160, fill="black", width=2)
    d.rectangle(
        (cx - fw // 2, cy + fh // 2 + 4, cx + fw // 2, h),
        fill=rng.choice(HAIR[2:]),
        outline="black",
        width=3,
    )  # shoulders
    return img


def write_samples(out_dir: str | Path, seed: int = 5508) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sample in enumerate(SAMPLES):
        img = draw(sample, seed + i)
        if not sample.transparent:
            img = img.convert("RGB")
        path = out / sample.name
        img.save(path, format="PNG", optimize=True)
        paths.append(path)
    log.info("wrote %d samples to %s", len(paths), out)
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    write_samples(sys.argv[1] if len(sys.argv) > 1 else "data/samples")


def noise_drawings(root: Path, n: int, size: int) -> Path:
    """n incompressible noise PNGs under root/prepared and their info.csv (benches and memory
    tests: sizes that do not shrink with PNG compression); returns the info.csv."""
    import numpy as np

    from kshd.data.captioning import write_info_csv

    (root / "prepared").mkdir(parents=True)
    rows = []
    for i in range(n):
        arr = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "prepared" / f"{i:04d}.png")
        rows.append((f"prepared/{i:04d}.png", f"drawing {i}, drawn by KSH drawing style"))
    write_info_csv(root / "info.csv", rows)
    return root / "info.csv"
