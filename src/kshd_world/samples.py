"""Draw the bundled sample drawings: KSH-style characters of the demo world, deterministic.

Each sample is a character of kshd_world.world drawn in the KSH style (bold lines, two-tone
shading, big eyes with thick eyeliner for girls, smaller eyes with thin lines for boys). Like
the artist's real files, most are RGBA PNGs on a transparent ground, several have Korean names,
and two have odd sizes. Their captions, as the artist reviewed them (the world's attributes in the
original project's prompt words), are in `data/sample_captions.csv`, the demo's caption overrides:
the demo's tiny BLIP-2 has random weights and would caption noise.
`python -m kshd_world.samples data/samples data/sample_captions.csv` redraws both.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from kshd_world.world import Character, character
from kshd_world.world import draw as draw_world

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    name: str
    girl: bool
    size: tuple[int, int] = (256, 256)
    transparent: bool = True
    clothes: str | None = None  # None: the seed's


SAMPLES = [
    Sample("소녀_01.png", girl=True),
    Sample("소녀_02.png", girl=True),
    Sample("소년_01.png", girl=False),
    Sample("girl_smile.png", girl=True),
    Sample("girl_side.png", girl=True, size=(256, 320)),
    Sample("boy_hoodie.png", girl=False, clothes="hoodie"),
    Sample("boy_school.png", girl=False, transparent=False, clothes="school uniform"),
    Sample("girl_twintails.png", girl=True, transparent=False),
    Sample("교복_소녀.png", girl=True, clothes="school uniform"),
    Sample("boy_wide.png", girl=False, size=(320, 256)),
]


def sample_character(sample: Sample, seed: int) -> Character:
    """The world's character of the seed, as the sample's name says (girl or boy, clothes);
    the boys with short hair, as in the artist's drawings."""
    c = character(seed)
    c = dataclasses.replace(
        c, girl=sample.girl, hair_length=c.hair_length if sample.girl else "short"
    )
    return dataclasses.replace(c, clothes=sample.clothes) if sample.clothes else c


def draw(sample: Sample, seed: int) -> Image.Image:
    """The sample as an RGBA image in the KSH style (transparent ground if the sample is)."""
    img = draw_world(sample_character(sample, seed), "ksh", sample.size, sample.transparent)
    return img.convert("RGBA")


# The first seed from 5508 on whose drawings the demo's content-hash holdout (20%) is two square
# drawings at 128, 64 and 32 px, as with the samples before the world: pipeline tests count
# training steps from 8 training drawings.
SEED = 5521


def write_samples(out_dir: str | Path, seed: int = SEED) -> list[Path]:
    """Draw every sample (seed + its index) into out_dir under its name; returns the paths."""
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


def write_sample_captions(path: str | Path, seed: int = SEED) -> Path:
    """Each sample's caption (its character's attributes) as an `image,text` overrides file; a
    transparent ground says white, the colour `prepare` flattens it onto."""
    from kshd.data.captioning import write_info_csv

    rows = []
    for i, sample in enumerate(SAMPLES):
        c = sample_character(sample, seed + i)
        c = dataclasses.replace(c, background="white") if sample.transparent else c
        rows.append((sample.name, c.caption()))
    write_info_csv(Path(path), rows)
    return Path(path)


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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    write_samples(sys.argv[1] if len(sys.argv) > 1 else "data/samples")
    write_sample_captions(sys.argv[2] if len(sys.argv) > 2 else "data/sample_captions.csv")
