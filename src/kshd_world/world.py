"""The demo world: procedural anime characters in two styles, their captions, and judges.

A character (girl or boy, hair colour and length, eye colour, clothes, background) is drawn
from a seed, so the same seed gives the same character in both styles:

- *plain*, the base world's style: thin grey-brown outlines, small plain eyes, soft shading;
- *ksh*, the artist's described traits: bold black lines, two-tone cel shading, big eyes with
  thick eyeliner for girls, smaller eyes with thin lines for boys.

Captions use the original project's prompt words ("an anime girl, long blonde hair, green
eyes, school uniform, white background"), so a model trained here answers the demo's prompts.
The judges (`kshd_world.world_judges`) read only the image; tests/test_world.py measures
them on held-out seeds. `python -m kshd_world.world OUT -n N --style ksh` writes a dataset.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

Rgb = tuple[int, int, int]
STYLES = ("plain", "ksh")
HAIR: dict[str, Rgb] = {
    "blonde": (246, 214, 112),
    "black": (62, 56, 70),
    "brown": (128, 82, 50),
    "red": (208, 62, 52),
    "blue": (84, 124, 222),
    "pink": (244, 150, 192),
}
EYES: dict[str, Rgb] = {
    "green": (52, 160, 88),
    "blue": (60, 110, 210),
    "brown": (130, 80, 40),
    "red": (200, 40, 50),
    "purple": (140, 70, 180),
}
BACKGROUNDS: dict[str, Rgb] = {
    "white": (250, 250, 248),
    "blue": (200, 224, 250),
    "yellow": (250, 240, 196),
    "green": (212, 240, 208),
    "pink": (250, 218, 230),
}
# clothes -> colours of its labels: main, detail, accent
CLOTHES: dict[str, tuple[Rgb, Rgb, Rgb]] = {
    "school uniform": ((48, 58, 100), (246, 246, 246), (186, 36, 62)),
    "hoodie": ((150, 152, 160), (118, 120, 130), (240, 240, 240)),
    "t-shirt": ((236, 132, 60), (236, 132, 60), (236, 132, 60)),
    "sailor uniform": ((246, 246, 246), (40, 50, 100), (210, 50, 60)),
}
LENGTHS = ("short", "long")
SKIN: Rgb = (255, 226, 206)
SKIN_SHADOW: Rgb = (236, 188, 172)
LINE = {"plain": (120, 100, 92), "ksh": (20, 16, 22)}
SHADOW = 0.76  # the KSH shadow tone: one flat step down
# label ids of the part map; 0 is the background
BACK_HAIR, BODY, DETAIL, ACCENT, NECK, FACE, FRINGE, LOCKS = range(1, 9)
HAIR_LABELS = (BACK_HAIR, FRINGE, LOCKS)


@dataclass(frozen=True)
class Character:
    """What a prompt can name about a drawing, and where it stands (jitter in 256-px units)."""

    girl: bool
    hair: str
    hair_length: str
    eyes: str
    clothes: str
    background: str
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def caption(self) -> str:
        """The drawn attributes in the original project's prompt words, nothing else."""
        who = "girl" if self.girl else "boy"
        return (
            f"an anime {who}, {self.hair_length} {self.hair} hair, {self.eyes} eyes, "
            f"{self.clothes}, {self.background} background"
        )

    def attributes(self) -> dict[str, str]:
        """The nameable attributes (no geometry), for tests and CSVs."""
        d = {k: str(v) for k, v in asdict(self).items() if k not in ("dx", "dy", "scale")}
        d["girl"] = "girl" if self.girl else "boy"
        return d


def character(seed: int) -> Character:
    """The character of a seed: every attribute uniform and independent, small jitter."""
    rng = random.Random(seed)
    return Character(
        girl=rng.random() < 0.5,
        hair=rng.choice(list(HAIR)),
        hair_length=rng.choice(LENGTHS),
        eyes=rng.choice(list(EYES)),
        clothes=rng.choice(list(CLOTHES)),
        background=rng.choice(list(BACKGROUNDS)),
        dx=rng.uniform(-12, 12),
        dy=rng.uniform(-8, 8),
        scale=rng.uniform(0.92, 1.06),
    )


@dataclass(frozen=True)
class _Frame:
    """The head's centre in pixels and the unit (one pixel of a 256-px drawing)."""

    hx: float
    hy: float
    u: float

    def pts(self, p: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(self.hx + x * self.u, self.hy + y * self.u) for x, y in p]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
        (a, b), (c, d) = self.pts([(x0, y0), (x1, y1)])
        return (a, b, c, d)


def _part_map(c: Character, size: tuple[int, int]) -> tuple[np.ndarray, _Frame, int]:
    """Label every pixel with the part it belongs to; returns the map, frame and half-shoulders."""
    w, h = size
    k = min(w, h) / 256
    f = _Frame(w / 2 + c.dx * k, h * 0.4 + c.dy * k, k * c.scale)
    lab = Image.new("L", size, 0)
    d = ImageDraw.Draw(lab)
    long = c.hair_length == "long"
    d.ellipse(f.box(-64, -74, 64, 44), fill=BACK_HAIR)
    if long:
        d.rounded_rectangle(f.box(-66, -20, 66, 150), radius=30 * f.u, fill=BACK_HAIR)
    sw = 76 if c.girl else 90  # half the shoulders' width
    ys = 72  # shoulder line below the head's centre
    body = [(-sw, 400), (-sw, ys + 26), (-sw + 28, ys), (sw - 28, ys), (sw, ys + 26), (sw, 400)]
    d.polygon(f.pts(body), fill=BODY)
    _clothes_detail(d, c.clothes, f, ys)
    d.rectangle(f.box(-14, 30, 14, ys + 6), fill=NECK)
    if c.clothes == "t-shirt":
        d.chord(f.box(-22, ys - 14, 22, ys + 16), 0, 180, fill=NECK)
    d.ellipse(f.box(-52, -60, 52, 54), fill=FACE)
    d.chord(f.box(-60, -78, 60, -4), 180, 360, fill=FRINGE)
    for i in range(5):  # bangs hanging over the forehead
        x = -48 + i * 24
        d.polygon(f.pts([(x - 14, -40), (x + 14, -40), (x, -22 + 4 * (i % 2))]), fill=FRINGE)
    if long:  # locks falling in front of the shoulders
        for side in (-1, 1):
            x0, x1 = sorted((side * 66, side * 46))
            d.rounded_rectangle(f.box(x0, -10, x1, 128), radius=10 * f.u, fill=LOCKS)
    return np.asarray(lab), f, sw


def _clothes_detail(d: ImageDraw.ImageDraw, clothes: str, f: _Frame, ys: int) -> None:
    """Collar, shirt, tie, hood or scarf: what makes the clothes named in the caption."""
    if clothes == "school uniform":
        d.polygon(f.pts([(-22, ys), (22, ys), (0, ys + 56)]), fill=DETAIL)
        tie = [(-6, ys + 8), (6, ys + 8), (4, ys + 46), (0, ys + 54), (-4, ys + 46)]
        d.polygon(f.pts(tie), fill=ACCENT)
    elif clothes == "hoodie":
        d.ellipse(f.box(-44, ys - 14, 44, ys + 22), fill=DETAIL)
        for x in (-12, 10):
            d.rectangle(f.box(x, ys + 16, x + 3, ys + 52), fill=ACCENT)
    elif clothes == "sailor uniform":
        collar = [(-56, ys), (56, ys), (30, ys + 34), (0, ys + 58), (-30, ys + 34)]
        d.polygon(f.pts(collar), fill=DETAIL)
        d.polygon(f.pts([(-16, ys + 36), (16, ys + 36), (0, ys + 62)]), fill=ACCENT)


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """m moved by (dy, dx) pixels, empty where it came from outside."""
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = m[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _outline(lab: np.ndarray, radius: int) -> np.ndarray:
    """Pixels on a boundary between two parts, grown to a line 2*radius+1 pixels wide."""
    edge = np.zeros(lab.shape, bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    grown = edge.copy()
    for k in range(1, radius + 1):
        grown |= _shift(edge, 0, k) | _shift(edge, 0, -k)
    rows = grown.copy()
    for k in range(1, radius + 1):
        grown |= _shift(rows, k, 0) | _shift(rows, -k, 0)
    return grown


def _shadows(lab: np.ndarray, f: _Frame, sw: int) -> np.ndarray:
    """Where light does not reach: hair and clothes away from the light, face under the fringe."""
    u = f.u
    xs = np.arange(lab.shape[1])[None, :] - f.hx
    ys = np.arange(lab.shape[0])[:, None] - f.hy
    hair = np.isin(lab, HAIR_LABELS)
    shade = hair & (xs > 22 * u - 0.25 * ys)
    fringe_cast = _shift(lab == FRINGE, round(9 * u), round(4 * u))
    face_cast = _shift(lab == FACE, round(10 * u), 0)
    shade |= (lab == FACE) & fringe_cast
    shade |= (lab == NECK) & face_cast
    shade |= np.isin(lab, (BODY, DETAIL, ACCENT)) & (xs > sw * u * 0.45)
    return shade


def draw(
    c: Character, style: str, size: tuple[int, int] = (256, 256), transparent: bool = False
) -> Image.Image:
    """The character in a style, RGB (RGBA on a transparent ground if asked); deterministic."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    lab, f, sw = _part_map(c, size)
    main, detail, accent = CLOTHES[c.clothes]
    hair, ground = HAIR[c.hair], BACKGROUNDS[c.background]
    colours = [ground, hair, main, detail, accent, SKIN, SKIN, hair, hair]  # by label id
    table = np.array(colours, dtype=np.float32)
    rgb = table[lab]
    shade = _shadows(lab, f, sw)
    skin = np.isin(lab, (NECK, FACE))
    if style == "ksh":
        rgb[shade & ~skin] *= SHADOW
        rgb[shade & skin] = SKIN_SHADOW
    else:  # the same shadows, blurred into a soft ramp with a gentle light gradient
        small = (max(1, lab.shape[1] // 4), max(1, lab.shape[0] // 4))  # blur at 1/4: fast
        soft = (
            Image.fromarray((shade * 255).astype(np.uint8))
            .resize(small, Image.BILINEAR)
            .filter(ImageFilter.GaussianBlur(1.75 * f.u))
            .resize(lab.shape[::-1], Image.BILINEAR)
        )
        ys = np.linspace(0.0, 1.0, lab.shape[0], dtype=np.float32)[:, None]
        k = 1 - 0.2 * np.asarray(soft, np.float32) / 255 - 0.08 * ys
        rgb *= np.where(lab > 0, k, 1.0)[..., None]
    radius = max(1, round(1.6 * f.u)) if style == "ksh" else 0
    line = _outline(lab, radius)
    rgb[line] = LINE[style]
    img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    _face(ImageDraw.Draw(img), c, style, f)
    if transparent:
        img.putalpha(Image.fromarray(np.where((lab == 0) & ~line, 0, 255).astype(np.uint8)))
    return img


def _face(d: ImageDraw.ImageDraw, c: Character, style: str, f: _Frame) -> None:
    """Eyes, brows, mouth and blush: where the styles differ most."""
    hx, hy, u = f.hx, f.hy, f.u
    ink = LINE[style]
    thin = max(1, round(1.2 * u))
    iris = EYES[c.eyes]
    for side in (-1, 1):
        ex, ey = hx + side * 24 * u, hy + 10 * u
        if style == "plain":
            ew, eh, liner = 9 * u, 11 * u, thin
        else:
            ew, eh, liner = (
                (28 * u, 32 * u, max(3, round(5 * u)))
                if c.girl
                else (18 * u, 13 * u, max(1, round(2 * u)))
            )
        if style == "ksh":
            d.ellipse((ex - ew / 2, ey - eh / 2, ex + ew / 2, ey + eh / 2), fill="white")
        r = eh * (0.42 if style == "ksh" else 0.5)
        d.ellipse((ex - r * 0.85, ey - r, ex + r * 0.85, ey + r), fill=iris)
        p = r * 0.45
        pupil = (26, 20, 26) if style == "ksh" else (70, 52, 50)
        d.ellipse((ex - p, ey - p, ex + p, ey + p), fill=pupil)
        d.ellipse((ex - r * 0.5, ey - r * 0.7, ex - r * 0.1, ey - r * 0.3), fill="white")
        top = (ex - ew / 2 - 2 * u, ey - eh / 2 - 2 * u, ex + ew / 2 + 2 * u, ey + eh / 2 + 4 * u)
        d.arc(top, 195, 345, fill=ink, width=liner)
        if style == "ksh" and c.girl:  # the eyeliner's flick
            d.line(
                (ex + side * ew / 2, ey - eh / 4, ex + side * (ew / 2 + 7 * u), ey - eh / 2),
                fill=ink,
                width=liner,
            )
        d.line((ex - 10 * u, ey - 20 * u, ex + 10 * u, ey - 22 * u), fill=ink, width=thin)
        if c.girl:
            d.ellipse((ex - 8 * u, ey + 12 * u, ex + 8 * u, ey + 17 * u), fill=(250, 184, 184))
    mouth = (hx - 7 * u, hy + 30 * u, hx + 7 * u, hy + 40 * u)
    d.arc(mouth, 20, 160, fill=ink, width=thin)


def drawings(
    seeds: range, style: str, size: tuple[int, int] = (256, 256)
) -> Iterator[tuple[Image.Image, str, dict[str, str], str]]:
    """(image, caption, attributes, style) for each seed: the world, one drawing at a time."""
    for seed in seeds:
        c = character(seed)
        yield draw(c, style, size), c.caption(), c.attributes(), style


def write_world(
    out_dir: str | Path,
    n: int,
    style: str,
    size: int = 256,
    first_seed: int = 0,
    trigger: str | None = None,
) -> Path:
    """n drawings as out_dir/prepared/<seed>.png and out_dir/info.csv (the caption stage's
    format). KSH captions carry the trigger phrase where the caption stage puts it: conf's
    `caption.trigger_position`, and `caption.trigger_phrase` unless `trigger` is given."""
    from kshd.config.compose import defaults
    from kshd.data.captioning import with_trigger, write_info_csv

    conf = defaults("caption")
    trigger = conf.trigger_phrase if trigger is None else trigger

    out = Path(out_dir)
    (out / "prepared").mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    seeds = range(first_seed, first_seed + n)
    for seed, (img, caption, _, _) in zip(seeds, drawings(seeds, style, (size, size)), strict=True):
        name = f"prepared/{style}-{seed:06d}.png"
        img.save(out / name, format="PNG")
        if style == "ksh":
            caption = with_trigger(caption, trigger, conf.trigger_position)
        rows.append((name, caption))
    write_info_csv(out / "info.csv", rows)
    rate = n / max(time.perf_counter() - start, 1e-9)
    log.info(
        "wrote %d %s drawings (%d px) to %s, %.0f images/s with PNG", n, style, size, out, rate
    )
    return out / "info.csv"


def main(argv: list[str] | None = None) -> int:
    """`python -m kshd_world.world OUT -n N --style ksh`: a dataset of the world."""
    p = argparse.ArgumentParser(prog="python -m kshd_world.world", description=__doc__)
    p.add_argument("out", help="folder to write prepared/*.png and info.csv into")
    p.add_argument("-n", type=int, default=100, help="number of drawings (default 100)")
    p.add_argument("--style", choices=STYLES, default="ksh")
    p.add_argument("--size", type=int, default=256, help="width and height in pixels")
    p.add_argument("--seed", type=int, default=0, help="first seed; drawing i uses seed+i")
    p.add_argument("--trigger", help="KSH captions' trigger phrase (conf's caption.trigger_phrase)")
    args = p.parse_args(argv)
    if args.n < 1 or args.size < 32:
        p.error("-n must be at least 1 and --size at least 32")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_world(args.out, args.n, args.style, args.size, args.seed, args.trigger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
