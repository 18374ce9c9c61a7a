"""The evaluation's sketch-to-style section: the line overlap that says how much of a
sketch's structure a drawing kept, and the style measured against the *other* drawings."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from kshd.drawing.control_images import control_image
from kshd.evaluation.sketch import SketchRows, line_overlap, sketch_metrics


def _drawing(box=(30, 30, 98, 98), shift: int = 0, line: str = "black") -> Image.Image:
    img = Image.new("RGB", (128, 128), "white")
    x0, y0, x1, y1 = box
    ImageDraw.Draw(img).rectangle((x0 + shift, y0, x1 + shift, y1), outline=line, width=3)
    return img


def test_line_overlap_counts_the_lines_kept_within_two_pixels():
    lines = control_image(_drawing(), "lineart_standard")
    assert line_overlap(_drawing(), lines) == 1.0  # the same drawing keeps every line
    assert line_overlap(_drawing(shift=1), lines) == 1.0  # a pixel off still counts
    moved = line_overlap(_drawing(box=(10, 10, 50, 50)), lines)
    assert moved < 0.2  # another square: almost none kept
    half = Image.new("RGB", (128, 128), "white")  # only the left and top sides drawn
    ImageDraw.Draw(half).line((30, 30, 98, 30), fill="black", width=3)
    ImageDraw.Draw(half).line((30, 30, 30, 98), fill="black", width=3)
    partial = line_overlap(half, lines)
    assert 0.5 < partial < 0.8  # all it drew is right, half of the lines are missing
    assert line_overlap(Image.new("RGB", (128, 128), "white"), lines) == 0.0  # nothing drawn


def test_the_style_is_measured_against_the_other_drawings():
    """An embedder that gives each drawing its own direction: a redrawing equal to its own
    drawing scores no style from it, only from the others."""
    originals = [_drawing(box=(20 + 10 * i, 20, 90, 90)) for i in range(3)]
    lines = [control_image(d, "lineart_standard") for d in originals]
    rows = SketchRows(lines, base=[_drawing(box=(5, 5, 20, 20))] * 3, lora=originals,
                      originals=originals)  # fmt: skip
    table = {id(d): torch.eye(3)[i] for i, d in enumerate(originals)}

    def embed(images):
        return torch.stack([table.get(id(im), torch.ones(3) / 3**0.5) for im in images])

    out = sketch_metrics(rows, embed)
    assert out["sketch_drawings"] == 3
    assert out["sketch_structure"] == 1.0 and out["sketch_structure_base"] < 0.1
    assert out["sketch_style"] == 0.0  # each is itself, orthogonal to the others
    assert out["sketch_style_base"] > 0.5 and out["sketch_style_gain"] < 0
