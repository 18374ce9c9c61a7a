"""Judges of the demo world's drawings from the image alone: style (plain or KSH) and hair colour.

Validated on held-out seeds in tests/test_world.py; later used on what the models draw.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from kshd_world.world import BACKGROUNDS, HAIR, LINE, SHADOW, SKIN, SKIN_SHADOW

DARK = 40  # a pixel whose channels all stay under this is ink (KSH lines, eyeliner, pupils)
INK_THRESHOLD = 0.005  # judge_style: KSH above this share of ink (tuned on seeds 0-199)


def _rgb(img: Image.Image) -> np.ndarray:
    """The image as an RGB array, a transparent ground composited onto white."""
    if img.mode in ("RGBA", "LA", "P"):
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def style_features(img: Image.Image) -> dict[str, float]:
    """What tells the styles apart, from the image alone: the share of ink (near-black pixels:
    KSH's bold lines and eyeliner) and the share of the 16 commonest colours (flat two-tone
    shading keeps almost every pixel in a few colours; soft shading spreads them)."""
    arr = _rgb(img).astype(np.int32)
    ink = float((arr.max(axis=2) < DARK).mean())
    codes = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    counts = np.sort(np.unique(codes, return_counts=True)[1])[::-1]
    return {"ink": ink, "flat": float(counts[:16].sum() / codes.size)}


def judge_style(img: Image.Image) -> str:
    """'ksh' or 'plain' by the share of ink (threshold set on seeds 0-199, measured on held-out
    seeds in tests); not by `flat`, which pixel noise destroys."""
    f = style_features(img)
    return "ksh" if f["ink"] > INK_THRESHOLD else "plain"


def _palette() -> tuple[np.ndarray, list[str]]:
    """Every flat colour of the world (hair also in shadow), each named; hair entries by colour."""
    cols, names = [], []
    for name, rgb in HAIR.items():
        for k in (1.0, 0.88, SHADOW):
            cols.append([v * k for v in rgb])
            names.append(name)
    others = [SKIN, SKIN_SHADOW, *LINE.values(), *BACKGROUNDS.values(), (255, 255, 255)]
    cols += [list(c) for c in others]
    names += ["-"] * len(others)
    return np.array(cols, np.float32), names


def judge_hair(img: Image.Image) -> str:
    """The hair colour: the hair palette entry nearest to most pixels of the image's top part
    (above the eyes, where hair, forehead and background are), skin, ink and ground excluded."""
    arr = _rgb(img).astype(np.float32)
    top = arr[: max(1, int(arr.shape[0] * 0.4)) : 2, ::2].reshape(-1, 3)  # every 4th pixel
    cols, names = _palette()
    nearest = ((top[:, None, :] - cols[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    votes = dict.fromkeys(HAIR, 0)
    for idx, n in zip(*np.unique(nearest, return_counts=True), strict=True):
        if names[idx] != "-":
            votes[names[idx]] += int(n)
    return max(votes, key=votes.__getitem__)
