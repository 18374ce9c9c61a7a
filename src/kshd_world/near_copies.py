"""Near-copies of a drawing as a folder of real drawings holds them: resized, recompressed,
slightly cropped, recoloured (for the near-duplicate tests and bench/near_duplicates.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def resized(img: Image.Image, factor: float = 0.9) -> Image.Image:
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.LANCZOS)


def jpeg(img: Image.Image, quality: int = 70) -> Image.Image:
    """Saved as JPEG and decoded again (what the prepare stage would read)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as done:
        return done.convert("RGB")


def cropped(img: Image.Image, share: float = 0.03) -> Image.Image:
    """`share` of the width and of the height cut off, off-centre: two thirds at the left and
    the top, one third at the right and the bottom."""
    dx, dy = round(img.width * share), round(img.height * share)
    box = (
        dx * 2 // 3,
        dy * 2 // 3,
        img.width - (dx - dx * 2 // 3),
        img.height - (dy - dy * 2 // 3),
    )
    return img.crop(box)


def brighter(img: Image.Image, factor: float = 1.1) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def more_contrast(img: Image.Image, factor: float = 1.1) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(factor)


def hue_shifted(img: Image.Image, degrees: float = 10.0) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + round(degrees * 256 / 360)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


# the four kinds the tests check (resized to 90%, JPEG quality 70, a 3% crop, brightness +10%)
COPIES = {
    "resized 90%": resized,
    "JPEG q70": jpeg,
    "cropped 3%": cropped,
    "brightness +10%": brighter,
}
# beyond them, what the bench measures too
MORE_COPIES = {
    "resized 50%": lambda img: resized(img, 0.5),
    "JPEG q40": lambda img: jpeg(img, 40),
    "cropped 5%": lambda img: cropped(img, 0.05),
    "contrast +10%": more_contrast,
    "hue +10 degrees": hue_shifted,
}
