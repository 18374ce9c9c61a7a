"""The ControlNet preprocessors on a known picture: a black square outline drawn on
white, 128 px, its lines 3 px wide. Each finds its lines where they are and nothing elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kshd.drawing.control_images import (
    DEFAULT_FOR,
    PREPROCESSORS,
    control_image,
    preprocessor_for,
)

SIDE, BOX = 128, (32, 32, 96, 96)


def _square(line: str = "black", ground: str = "white") -> Image.Image:
    img = Image.new("RGB", (SIDE, SIDE), ground)
    ImageDraw.Draw(img).rectangle(BOX, outline=line, width=3)
    return img


def _near_outline(margin: int) -> np.ndarray:
    """True within `margin` px of the square's outline."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    x0, y0, x1, y1 = BOX
    inside_outer = (
        (xx >= x0 - margin) & (xx <= x1 + margin) & (yy >= y0 - margin) & (yy <= y1 + margin)
    )
    inside_inner = (
        (xx > x0 + 2 + margin)
        & (xx < x1 - 2 - margin)
        & (yy > y0 + 2 + margin)
        & (yy < y1 - 2 - margin)
    )
    return inside_outer & ~inside_inner


@pytest.mark.parametrize(("name", "margin"), [("lineart_standard", 2), ("invert", 0),
                                              ("scribble_xdog", 4), ("canny", 2)])  # fmt: skip
def test_each_preprocessor_finds_the_squares_lines_where_they_are(name, margin):
    out = np.asarray(control_image(_square(), name).convert("L"), dtype=np.float32)
    assert out.shape == (SIDE, SIDE)
    lit = out > 63  # white lines on black (line art: about 127 for a plain stroke, as in A1111)
    near = _near_outline(margin)
    assert lit.sum() > 0 and not lit[~near].any(), name  # nothing away from the lines
    x0, y0, x1, y1 = BOX
    top = lit[y0 - margin : y0 + 3 + margin, 48:80].any(axis=0)
    right = lit[48:80, x1 - 2 - margin : x1 + 1 + margin].any(axis=1)
    assert top.all() and right.all(), name  # found all along the sides, not in spots
    assert out[64, 64] == 0 and out[5, 5] == 0  # the middle and the margin stay black


def test_line_art_is_white_on_black_whatever_the_ink():
    """Light pencil and black ink come out alike (lineart_standard normalises by the strokes)."""
    ink = np.asarray(control_image(_square("black"), "lineart_standard").convert("L"))
    pencil = np.asarray(control_image(_square((150, 150, 150)), "lineart_standard").convert("L"))
    assert abs(int(ink.max()) - int(pencil.max())) <= 2 and (ink > 127).sum() > 0
    assert ((ink > 127) == (pencil > 127)).mean() > 0.99


def test_scribble_strokes_are_thicker_than_the_sketch():
    lines = (np.asarray(control_image(_square(), "scribble_xdog").convert("L")) > 127).sum()
    drawn = (np.asarray(_square().convert("L")) < 128).sum()
    assert lines > drawn


def test_auto_picks_the_control_types_usual_preprocessor_and_unknown_names_are_refused():
    assert {preprocessor_for(c, "auto") for c in DEFAULT_FOR} <= set(PREPROCESSORS)
    assert preprocessor_for("scribble", "auto") == "scribble_xdog"
    assert preprocessor_for("lineart_anime", "invert") == "invert"
    with pytest.raises(ValueError, match="'sobel'; choose auto or one of"):
        preprocessor_for("canny", "sobel")
    picture = _square()
    assert np.array_equal(np.asarray(control_image(picture, "none")), np.asarray(picture))
