"""A folder of odd and broken drawings, each with the outcome `prepare` must report for it."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ACCEPT = "accepted"
DUPLICATE = "duplicate"


def _rgba() -> Image.Image:
    img = Image.new("RGBA", (96, 96), (0, 0, 0, 0))  # transparent black
    img.paste((30, 90, 200, 255), (0, 0, 48, 96))
    return img


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _save(fmt: str, img: Image.Image | None = None, **kw) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        shade = sum(path.name.encode()) % 200  # a different picture per file
        (img or Image.new("RGB", (80, 64), (shade, 120, 40))).save(path, format=fmt, **kw)

    return build


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((250, 20, 20), (20, 20, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_transparent(path: Path) -> None:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 32, 64))
    img.save(path, transparency=0)


def _exif_rotated(path: Path) -> None:
    img = Image.new("RGB", (200, 100), "white")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", exif=exif.tobytes())


# Where a red block stored at the top-left corner must appear once EXIF orientation is applied.
ORIENTED_CORNER = {
    2: "top-right",
    3: "bottom-right",
    4: "bottom-left",
    5: "top-left",
    6: "top-right",
    7: "bottom-right",
    8: "bottom-left",
}


def _oriented(orientation: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        img = Image.new("RGB", (200, 100), (255, 255, 255 - orientation))
        img.paste((220, 0, 0), (0, 0, 40, 40))
        exif = img.getexif()
        exif[0x0112] = orientation
        img.save(path, format="JPEG", quality=95, exif=exif.tobytes())

    return build


def _animated_webp(path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((250, 120, 20), (20, 120, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _locked(path: Path) -> None:
    _save("PNG")(path)
    path.chmod(0)


def _truncated(fmt: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    return build


def _bomb(path: Path) -> None:
    Image.new("1", (20000, 20000)).save(path, format="PNG")  # ~50 KB on disk, 400 Mpx


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


# name -> (builder, expected outcome or a words the rejection reason must contain)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "소녀 그림 (1).png": (lambda p: _rgba().save(p), ACCEPT),
    "photo.jpg": (_save("JPEG"), ACCEPT),
    "art.webp": (_save("WEBP"), ACCEPT),
    "art.bmp": (_save("BMP"), ACCEPT),
    "art.tiff": (_save("TIFF"), ACCEPT),
    "anim.gif": (_animated_gif, ACCEPT),
    "palette.png": (_palette_transparent, ACCEPT),
    "grey16.png": (lambda p: Image.fromarray(np.full((64, 64), 32768, np.uint16)).save(p), ACCEPT),
    "cmyk.jpg": (_save("JPEG", Image.new("CMYK", (64, 64), (255, 0, 0, 0))), ACCEPT),
    "grey.png": (_save("PNG", Image.new("L", (64, 64), 90)), ACCEPT),
    "grey_alpha.png": (_save("PNG", Image.new("LA", (64, 64), (90, 0))), ACCEPT),
    "rotated.jpg": (_exif_rotated, ACCEPT),
    "sub/nested.png": (_save("PNG"), ACCEPT),
    "sub/copy.webp": (_save("WEBP", _rgba(), lossless=True, exact=True), DUPLICATE),
    "empty.png": (_bytes(b""), "empty file"),
    "truncated.png": (_truncated("PNG"), "truncated or corrupt"),
    "truncated.jpg": (_truncated("JPEG"), "truncated or corrupt"),
    "page.png": (_bytes(b"<!DOCTYPE html><html><body>404</body></html>"), "HTML"),
    "drawing.svg": (_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'), "SVG"),
    "notes.md": (_bytes("# 메모\nnot a drawing".encode()), "not an image"),
    "tiny.png": (_save("PNG", Image.new("RGB", (8, 8))), "too small"),
    "strip.png": (_save("PNG", Image.new("RGB", (2000, 10))), "too small"),
    "bomb.png": (_bomb, "decompression-bomb limit"),
    "broken_link.png": (_symlink("does-not-exist.png"), "unreadable"),
    "loop.png": (_symlink("loop.png"), "unreadable"),
    "folder.png/inner.txt": (_bytes(b"x"), "not an image"),
    "anim.webp": (_animated_webp, ACCEPT),
    "one_pixel.png": (_save("PNG", Image.new("RGB", (1, 1))), "too small"),
    "strip_20000x10.png": (_save("PNG", Image.new("RGB", (20000, 10))), "too small"),
    "  spaced   out name .png": (_save("PNG"), ACCEPT),
    "pipe.png": (_fifo, "not a regular file"),
    # root reads any file whatever its mode, so only another user sees it refused
    "locked.png": (_locked, ACCEPT if os.geteuid() == 0 else "permission denied"),
    **{f"orient_{o}.jpg": (_oriented(o), ACCEPT) for o in ORIENTED_CORNER},
}


def build_corpus(root: Path) -> dict[str, str]:
    """Write every case under root; returns {relative path: expected outcome}."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, (build, _) in CASES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    (root / "photo.txt").write_text("a girl in a red coat", encoding="utf-8")  # sidecar
    return {rel: expected for rel, (_, expected) in CASES.items()}
