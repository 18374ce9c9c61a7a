"""ControlNet preprocessors that need no weights: a picture in, the control image out (white
lines on black, what the line-art, scribble and canny ControlNets were trained on).

The names are sd-webui-controlnet's (A1111's ControlNet extension), so the PNG parameters read
the same there: `lineart_standard` (its "from white bg & black line"), `invert` (clean digital
line art used as it is), `scribble_xdog`, `canny`, and `none` (the picture is already a control
image). Each control type has its usual preprocessor (`DEFAULT_FOR`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

# which ControlNet each preprocessor feeds, as A1111 pairs them
DEFAULT_FOR = {
    "lineart": "lineart_standard",
    "lineart_anime": "lineart_standard",
    "scribble": "scribble_xdog",
    "canny": "canny",
}


def _rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def _gray_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.clip(0, 255).astype(np.uint8), "L").convert("RGB")


def lineart_standard(img: Image.Image, blur: float = 6.0) -> Image.Image:
    """Dark strokes on a light ground, found as how much darker each pixel is than its blurred
    surroundings (sd-webui-controlnet's weight-free line-art extractor), normalised by the
    median stroke so faint pencil and black ink come out alike."""
    import cv2

    x = _rgb(img)
    g = cv2.GaussianBlur(x, (0, 0), blur)
    darker = np.min(g - x, axis=2).clip(0, 255)
    strokes = darker[darker > 8]
    scale = max(16.0, float(np.median(strokes))) if strokes.size else 16.0
    return _gray_image(darker / scale * 127)


def invert(img: Image.Image, threshold: int = 128) -> Image.Image:
    """Clean digital line art as it is: black lines on white become white on black."""
    gray = np.asarray(img.convert("L"), dtype=np.float32)
    return _gray_image(np.where(gray < threshold, 255.0, 0.0))


def scribble_xdog(img: Image.Image, threshold: int = 32) -> Image.Image:
    """Thick strokes from a rough sketch: a difference of Gaussians, thresholded (XDoG, as
    sd-webui-controlnet's scribble_xdog), then widened by a stroke's width for the scribble
    model, which was trained on thick lines."""
    import cv2

    x = _rgb(img)
    fine, coarse = cv2.GaussianBlur(x, (0, 0), 0.5), cv2.GaussianBlur(x, (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255)
    lines = (2 * (255 - dog) > threshold).astype(np.uint8) * 255
    width = max(3, round(min(img.size) / 170)) | 1  # odd, about 3 px at 512
    return _gray_image(cv2.dilate(lines, np.ones((width, width), np.uint8)).astype(np.float32))


def canny(img: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """OpenCV's Canny edges of the picture's grey levels."""
    import cv2

    gray = np.asarray(img.convert("L"), dtype=np.uint8)
    return _gray_image(cv2.Canny(gray, low, high).astype(np.float32))


def none(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


PREPROCESSORS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "lineart_standard": lineart_standard,
    "invert": invert,
    "scribble_xdog": scribble_xdog,
    "canny": canny,
    "none": none,
}


def preprocessor_for(control: str, preprocessor: str) -> str:
    """The preprocessor a request names, `auto` being the control type's usual one."""
    name = DEFAULT_FOR.get(control, "none") if preprocessor == "auto" else preprocessor
    if name not in PREPROCESSORS:
        raise ValueError(f"{name!r}; choose auto or one of {sorted(PREPROCESSORS)}")
    return name


def control_image(img: Image.Image, preprocessor: str) -> Image.Image:
    """The control image of a picture (already at the size it will be drawn)."""
    return PREPROCESSORS[preprocessor](img)
