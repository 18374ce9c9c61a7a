"""The X/Y/Z plot's picture: the cells in a grid with their axis values written above the
columns and left of the rows, as A1111's grid annotations lay them out (a font of a 25th of a
cell's width plus height, the row labels in a band three quarters of a cell wide), and one
grid per Z value side by side under its Z value."""

from __future__ import annotations

import math
from functools import cache

from PIL import Image, ImageDraw, ImageFont

BLANK = (224, 224, 224)  # a cell not drawn (the grid was interrupted)
INK = (0, 0, 0)
MIN_FONT = 12  # legible on small cells (A1111's size alone is 5 px on 64 px cells)


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (no font file needed on any machine)."""
    return ImageFont.load_default(size=size)


def font_size(width: int, height: int) -> int:
    return max(MIN_FONT, (width + height) // 25)


def wrap(draw: ImageDraw.ImageDraw, text: str, face, width: int) -> list[str]:
    """`text` in lines no wider than `width` (a word wider than that keeps a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and draw.textlength(longer, font=face) > width:
                lines.append(line)
                line = word
            else:
                line = longer
        lines.append(line)
    return [line for line in lines if line] if text else []


def image_grid(images: list[Image.Image], rows: int) -> Image.Image:
    """The images row by row, `rows` rows, each the first image's size."""
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, (i % cols * w, i // cols * h))
    return grid


def _heights(draw, blocks: list[list[str]], face, spacing: int) -> list[int]:
    """Each block's height: its lines and the spacing between them."""
    out = []
    for lines in blocks:
        sizes = [draw.multiline_textbbox((0, 0), line, font=face) for line in lines]
        out.append(sum(b[3] - b[1] + spacing for b in sizes) - spacing if sizes else 0)
    return out


def _write(draw, x: float, y: float, lines: list[str], face, spacing: int) -> None:
    """The lines centred on x, from y down."""
    for line in lines:
        box = draw.multiline_textbbox((0, 0), line, font=face)
        draw.multiline_text((x - (box[2] - box[0]) / 2, y - box[1]), line, font=face, fill=INK)
        y += box[3] - box[1] + spacing


def annotate(
    grid: Image.Image, size: tuple[int, int], columns: list[str], rows: list[str], margin: int = 0
) -> Image.Image:
    """`grid` of cells of `size` with `columns` written above it and `rows` left of it (no
    band for an axis whose labels are all empty), `margin` pixels between the cells."""
    width, height = size
    cols, n_rows = grid.width // width, grid.height // height
    if (cols, n_rows) != (len(columns), len(rows)):
        raise ValueError(f"{cols}x{n_rows} cells but {len(columns)}x{len(rows)} labels")
    face = font(font_size(width, height))
    spacing = face.size // 2 if hasattr(face, "size") else 4
    pad_left = width * 3 // 4 if any(rows) else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top = [wrap(measure, t, face, width) for t in columns]
    left = [wrap(measure, t, face, pad_left) for t in rows]
    top_heights, left_heights = (
        _heights(measure, top, face, spacing),
        _heights(measure, left, face, spacing),
    )
    pad_top = max(top_heights) + spacing * 2 if any(top_heights) else 0
    out = Image.new(
        "RGB",
        (
            grid.width + pad_left + margin * (cols - 1),
            grid.height + pad_top + margin * (n_rows - 1),
        ),
        "white",
    )
    for r in range(n_rows):
        for c in range(cols):
            cell = grid.crop((c * width, r * height, (c + 1) * width, (r + 1) * height))
            out.paste(cell, (pad_left + (width + margin) * c, pad_top + (height + margin) * r))
    draw = ImageDraw.Draw(out)
    for c, lines in enumerate(top):
        x = pad_left + (width + margin) * c + width / 2
        _write(draw, x, pad_top / 2 - top_heights[c] / 2, lines, face, spacing)
    for r, lines in enumerate(left):
        y = pad_top + (height + margin) * r + height / 2 - left_heights[r] / 2
        _write(draw, pad_left / 2, y, lines, face, spacing)
    return out


def sub_grid(
    cells: list[Image.Image | None], size: tuple[int, int], labels: tuple[list[str], list[str]],
    legend: bool = True, margin: int = 0,
) -> Image.Image:  # fmt: skip
    """One Z value's grid: `cells` row by row (len(labels[0]) a row), a cell not drawn blank;
    `labels`: the X values' and the Y values'."""
    xs, ys = labels
    shown = [c if c is not None else Image.new("RGB", size, BLANK) for c in cells]
    grid = image_grid(shown, rows=len(ys))
    if not legend:
        return annotate(grid, size, [""] * len(xs), [""] * len(ys), margin)
    return annotate(grid, size, xs, ys, margin)


def z_grid(grids: list[Image.Image], titles: list[str], legend: bool = True) -> Image.Image:
    """The sub-grids side by side, each under its Z value (no band when there is none)."""
    size = grids[0].size
    whole = image_grid(grids, rows=1)
    return annotate(whole, size, titles if legend else [""] * len(grids), [""])
