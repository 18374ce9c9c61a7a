"""Image intake: decode any drawing the artist has into clean RGB, or say exactly why not.

Shared by the `prepare` stage and the app's image-to-image input, so both follow one set of rules.
A drawing's transparency is composited away for the RGB and kept apart as its alpha (the masked
loss weights by it): `<name>.alpha.png` beside the prepared `<name>.png`.
"""

from __future__ import annotations

import hashlib
import re
import stat
import unicodedata
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from kshd.config.schema import PrepareSettings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageRejected(ValueError):
    """An input that cannot be used; `reason` is what the report says about it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IntakeRules:
    """What an acceptable drawing is and how it is normalised.

    No defaults: the prepare stage fills it from the `prepare` group (`from_settings`), the app
    from `generate.limits`."""

    background: tuple[int, int, int]
    min_side: int
    max_pixels: int
    limit_key: str  # the config key of max_pixels, named when a picture is over it

    @classmethod
    def from_settings(cls, prepare: PrepareSettings) -> IntakeRules:
        """The `prepare` group's rules, field by field of the same name."""
        own = {f.name: getattr(prepare, f.name) for f in fields(cls) if f.name != "limit_key"}
        return cls(**own, limit_key="prepare.max_pixels")


@dataclass
class LoadedImage:
    image: Image.Image  # RGB
    animated: bool = False
    alpha: Image.Image | None = None  # "L": the drawing's alpha, None when it is opaque


ALPHA_SUFFIX = ".alpha.png"


def alpha_path(image: Path) -> Path:
    """Where a prepared drawing's alpha lies: `x-123.png` -> `x-123.alpha.png`."""
    return image.with_suffix(ALPHA_SUFFIX)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit and float images to 8 bits (PIL's convert('L') clips them to white)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if arr.max(initial=0.0) > 255 or img.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any mode to RGB, compositing transparency onto `background` (not onto what lies beneath)."""
    return _composite(_normalised(img), background)


def _normalised(img: Image.Image) -> Image.Image:
    """Any mode to RGB, or RGBA when it has transparency."""
    if img.mode in _HIGH_BIT_MODES:
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa") or (img.mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGBA" else img.convert("RGB")


def _composite(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if img.mode == "RGBA":
        canvas = Image.new("RGBA", img.size, (*background, 255))
        return Image.alpha_composite(canvas, img).convert("RGB")
    return img


def _alpha(img: Image.Image) -> Image.Image | None:
    """The alpha of a normalised image; None when there is none or it is opaque throughout."""
    if img.mode != "RGBA":
        return None
    alpha = img.getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def _check_file(path: Path) -> None:
    """Reject what cannot even be read, before a decoder sees it."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            # opening a named pipe would wait for a writer forever
            raise ImageRejected("not a regular file (a named pipe, socket or device)")
        with path.open("rb") as f:
            f.read(1)
    except PermissionError as exc:
        raise ImageRejected("unreadable: permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageRejected("not a file (a folder)") from exc
    except OSError as exc:  # broken link, symlink loop, I/O error
        raise ImageRejected(f"unreadable: {exc.strerror or exc}") from exc
    if st.st_size == 0:
        raise ImageRejected("empty file (0 bytes)")


def _not_an_image_reason(path: Path) -> str:
    """Say what the file seems to be instead, when the content tells."""
    head = path.read_bytes()[:512].lstrip().lower()
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in head):
        return "not a raster image: SVG is not supported (export it as PNG)"
    if head.startswith((b"<!doctype html", b"<html")):
        return "not an image: the file is an HTML page"
    return "not an image: no image format recognises its content"


def _decode(path: Path, rules: IntakeRules) -> LoadedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            width, height = img.size
            if width * height > rules.max_pixels:
                raise ImageRejected(
                    f"larger than {rules.limit_key}: {width}x{height} = {width * height} "
                    f"pixels, over {rules.max_pixels} (a decompression-bomb guard)"
                )
            animated = bool(getattr(img, "is_animated", False))
            img.seek(0)
            img.load()
            img = _normalised(ImageOps.exif_transpose(img))
            return LoadedImage(_composite(img, rules.background), animated, _alpha(img))


def load_image(path: str | Path, rules: IntakeRules) -> LoadedImage:
    """Open, check and normalise one file; ImageRejected says why in words a person reads."""
    path = Path(path)
    _check_file(path)
    try:
        loaded = _decode(path, rules)
    except ImageRejected:
        raise  # said already (a ValueError, not a corrupt file)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"larger than Pillow's decompression-bomb limit: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(_not_an_image_reason(path)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"truncated or corrupt: {exc}") from exc
    rgb = loaded.image
    if min(rgb.size) < rules.min_side:
        raise ImageRejected(
            f"too small: {rgb.width}x{rgb.height}, short side below min_side {rules.min_side}"
        )
    return loaded


def resize_short_side(img: Image.Image, side: int, upscale: bool) -> Image.Image:
    """Resize so the short side is `side`, keeping aspect (Lanczos); only enlarge if asked."""
    short = min(img.size)
    if short == side or (short < side and not upscale):
        return img
    scale = side / short
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def fit_within(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale and centre-crop to exactly width x height (for image-to-image inputs)."""
    return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)


def pixel_hash(img: Image.Image) -> str:
    """Hash of the decoded pixels and size: equal for the same drawing saved in two formats."""
    digest = hashlib.sha256(f"{img.mode}{img.size}".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def safe_stem(name: str, max_len: int = 48) -> str:
    """A file-name stem that is safe everywhere but still readable (Hangul kept, NFC)."""
    stem = unicodedata.normalize("NFC", Path(name).stem)
    stem = re.sub(r"[^\w\-]+", "_", stem, flags=re.UNICODE).strip("_.-")
    return stem[:max_len] or "image"
