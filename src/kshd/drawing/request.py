"""What a drawing request may ask for, checked before the model is touched.

Shared by the Python API, the CLI and the GUI, so every front end gives the same message for the
same mistake, naming the field and what it accepts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from kshd.config.schema_generate import GenerateSettings, Limits
from kshd.config.values import CLIP_SKIPS, RESIZE_MODES, SAMPLERS
from kshd.data.images import ImageRejected, IntakeRules, fit_within, flatten, load_image
from kshd.prompts.encoding import join_prefix

MAX_SEED = 2**32 - 1
WHITE = (255, 255, 255)  # an image-to-image input's transparency and `fill` padding


class _FromConf:
    """The default of a request or engine field: the project's `generate` value (its
    params.yaml, else conf/: `kshd.config.compose.defaults`), filled when built (an explicit
    None stays None, and validation names it)."""

    def __repr__(self) -> str:
        return "<conf/generate>"


FROM_CONF: Any = _FromConf()
# Request field <- generate key, where the names differ (A1111 calls CFG `cfg_scale`); the
# ControlNet unit's defaults are under `generate.control`.
REQUEST_KEYS = {
    "cfg_scale": "guidance_scale",
    "control_type": "control.type",
    "preprocessor": "control.preprocessor",
    "control_weight": "control.weight",
    "guidance_start": "control.guidance_start",
    "guidance_end": "control.guidance_end",
    "control_mode": "control.mode",
    "mask_blur": "inpaint.mask_blur",
    "inpaint_area": "inpaint.area",
    "inpaint_padding": "inpaint.padding",
}


def conf_value(g: Any, field: str, keys: dict[str, str] = REQUEST_KEYS) -> Any:
    """A field's value in the `generate` settings, its key in `keys` where the names differ
    (dotted keys walked); AttributeError when it has none."""
    value = g
    for part in keys.get(field, field).split("."):
        value = getattr(value, part)
    return value


class RequestError(ValueError):
    """A request that cannot be drawn; the message names the field and what is accepted."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Request:
    """One drawing request. Its mode follows from the inputs it sets (`kshd.drawing.modes`):
    text to image; image to image with `image`; inpainting with `mask` as well; a sketch's lines
    guiding a ControlNet with `control_image` (found by `preprocessor`).

    A field left out takes the project's `generate` value (the working directory's params.yaml,
    as `kshd gui` there loads it, else conf/), so `Request("a girl")` works for library callers
    while the defaults live in conf/ alone; the app and the CLI fill every field from the
    config they loaded, overrides included (`from_settings`)."""

    prompt: str
    negative_prompt: str = FROM_CONF
    positive_prefix: str = FROM_CONF
    negative_prefix: str = FROM_CONF
    sampler: str = FROM_CONF
    steps: int = FROM_CONF
    cfg_scale: float = FROM_CONF
    seed: int = FROM_CONF
    width: int = FROM_CONF
    height: int = FROM_CONF
    batch_count: int = FROM_CONF
    batch_size: int = FROM_CONF
    lora_scale: float = FROM_CONF
    image: str | Path | Image.Image | None = None  # None: text-to-image, not a default
    strength: float = FROM_CONF
    resize_mode: str = FROM_CONF
    control_image: str | Path | Image.Image | None = None  # None: no ControlNet, not a default
    control_type: str = FROM_CONF
    preprocessor: str = FROM_CONF
    control_weight: float = FROM_CONF
    guidance_start: float = FROM_CONF
    guidance_end: float = FROM_CONF
    control_mode: str = FROM_CONF
    mask: str | Path | Image.Image | None = None  # white = redraw; None: no inpainting
    mask_blur: int = FROM_CONF
    inpaint_area: str = FROM_CONF
    inpaint_padding: int = FROM_CONF
    # A1111's Clip skip for this request (1 or 2, as its PNG Info reads it); None: the base's
    # `model.clip_skip`, not a default of conf/generate
    clip_skip: int | None = None

    def __post_init__(self) -> None:
        fill_from_conf(self)

    @classmethod
    def from_settings(cls, generate: GenerateSettings, prompt: str = "", **changes) -> Request:
        """Every field from these `generate` settings (a loaded config's), then `changes`
        (None = keep the setting)."""
        values = {name: conf_value(generate, name) for name in CONF_FIELDS}
        return cls(prompt, **values | {k: v for k, v in changes.items() if v is not None})

    @property
    def full_prompt(self) -> str:
        return join_prefix(self.positive_prefix, self.prompt)

    @property
    def full_negative(self) -> str:
        return join_prefix(self.negative_prefix, self.negative_prompt)

    @property
    def count(self) -> int:
        return self.batch_count * self.batch_size


def fill_from_conf(obj: Any, keys: dict[str, str] = REQUEST_KEYS) -> None:
    """Each field of the dataclass `obj` left at FROM_CONF takes the project's `generate` value
    (frozen ones too; `keys`: its key where the names differ): one place for Request's and
    EngineSettings' defaults."""
    left = [f.name for f in fields(obj) if getattr(obj, f.name) is FROM_CONF]
    if left:
        from kshd.config.compose import defaults

        g = defaults("generate")
        for name in left:
            object.__setattr__(obj, name, conf_value(g, name, keys))


# The request fields whose defaults come from the `generate` group (not the prompt or image).
CONF_FIELDS = tuple(f.name for f in fields(Request) if f.default is FROM_CONF)


def conf_request_values(conf_dir: str | Path | None = None) -> dict[str, Any]:
    """The project's `generate` values by request field name (kshd.config.compose.defaults)."""
    from kshd.config.compose import defaults

    g = defaults("generate", conf_dir)
    return {name: conf_value(g, name) for name in CONF_FIELDS}


def sampler_key(name: str) -> str:
    """`dpmpp_2m_karras` or its A1111 name `DPM++ 2M Karras`."""
    for key, (label, _, _) in SAMPLERS.items():
        if name in (key, label):
            return key
    raise RequestError("sampler", f"{name!r} is unknown; choose one of {', '.join(SAMPLERS)}")


def check_whole(field: str, value: object, low: int, high: int) -> int:
    """`value` as a whole number in [low, high] (2.0 is 2), else RequestError naming `field`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(field, f"{value!r} must be a whole number from {low} to {high}")
    return value


def check_number(field: str, value: object, low: float, high: float) -> float:
    """`value` as a number in [low, high], else RequestError naming `field`."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(field, f"{value!r} must be a number from {low:g} to {high:g}")
    return float(value)


def validate_shared(req: Request, limits: Limits) -> None:
    """Check and normalise the fields every request has (its mode's own: `Mode.check`); raise
    RequestError for the first bad one."""
    for field in ("prompt", "negative_prompt", "positive_prefix", "negative_prefix"):
        text = getattr(req, field)
        if not isinstance(text, str):
            raise RequestError(field, f"must be text, not {type(text).__name__}")
        if len(text) > limits.max_prompt_chars:
            raise RequestError(
                field, f"{len(text)} characters; at most {limits.max_prompt_chars} are accepted"
            )
    req.sampler = sampler_key(req.sampler)
    req.steps = check_whole("steps", req.steps, 1, limits.max_steps)
    req.cfg_scale = check_number("cfg_scale", req.cfg_scale, 1.0, 30.0)
    req.seed = check_whole("seed", req.seed, -1, MAX_SEED)
    for field in ("width", "height"):
        side = check_whole(field, getattr(req, field), 64, limits.max_side)
        if side % 8:
            raise RequestError(field, f"{side} is not a multiple of 8 (e.g. {side // 8 * 8})")
        setattr(req, field, side)
    req.batch_count = check_whole("batch_count", req.batch_count, 1, limits.max_batch_count)
    req.batch_size = check_whole("batch_size", req.batch_size, 1, limits.max_batch_size)
    m = limits.max_lora_scale
    req.lora_scale = check_number("lora_scale", req.lora_scale, -m, m)
    req.strength = check_number("strength", req.strength, 0.0, 1.0)
    if req.clip_skip is not None:
        req.clip_skip = check_whole("clip_skip", req.clip_skip, 1, max(CLIP_SKIPS))
    if req.resize_mode not in RESIZE_MODES:
        raise RequestError("resize_mode", f"{req.resize_mode!r}; choose one of {RESIZE_MODES}")


def first_seed(seed: int) -> int:
    """-1 draws a random seed (reported with every image); image i uses seed + i, as A1111."""
    return secrets.randbelow(MAX_SEED) if seed == -1 else seed


def input_picture(image: str | Path | Image.Image, limits: Limits) -> Image.Image:
    """The image-to-image input through prepare's intake rules: EXIF turned, alpha on white."""
    rules = IntakeRules(
        background=WHITE,
        min_side=8,
        max_pixels=limits.max_upload_pixels,
        limit_key="generate.limits.max_upload_pixels",
    )
    if isinstance(image, Image.Image):
        if image.width * image.height > rules.max_pixels:
            raise RequestError("image", f"{image.width}x{image.height} is larger than "
                               f"{rules.limit_key} ({rules.max_pixels} pixels)")  # fmt: skip
        return flatten(ImageOps.exif_transpose(image), rules.background)
    try:
        return load_image(image, rules).image
    except ImageRejected as exc:
        raise RequestError("image", f"{Path(image).name}: {exc.reason}") from exc


def resize_input(img: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """crop: fill and cut the overhang; fill: keep all of it, pad with white; stretch."""
    if mode == "crop":
        return fit_within(img, width, height)
    lanczos = Image.Resampling.LANCZOS
    if mode == "fill":
        return ImageOps.pad(img, (width, height), lanczos, color=WHITE)
    return img.resize((width, height), lanczos)
