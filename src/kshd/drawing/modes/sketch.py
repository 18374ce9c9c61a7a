"""Sketch to style: a sketch's lines (found by a weight-free preprocessor) guide a ControlNet,
with or without a picture to redraw (`image`, image to image with the control); the
ControlNets themselves, A1111's control modes and the unit's PNG text: `kshd.drawing.control`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from kshd.config.schema_generate import Limits
from kshd.config.values import CONTROL_MODES, PREPROCESSORS
from kshd.drawing.control import (
    ControlNets,
    control_call,
    read_unit,
    sketch_control,
    soft_injection,
    unit_infotext,
)
from kshd.drawing.modes.base import Mode
from kshd.drawing.modes.img2img import fitted_picture, unchanged_picture
from kshd.drawing.request import Request, RequestError, check_number, validate_shared

MAX_CONTROL_WEIGHT = 2.0  # A1111's slider


@dataclass
class Guided:
    """What a sketch request draws from: the control image, its ControlNet unit as A1111
    writes it in the PNG parameters, and the picture to redraw (None: from noise)."""

    control: Image.Image | None = None
    unit: str | None = None
    picture: Image.Image | None = None


class Sketch(Mode):
    name = "sketch"
    param_readers = {"Denoising strength": ("strength", float)}
    UNIT = "ControlNet 0"  # A1111's first (our only) ControlNet unit

    @classmethod
    def param_keys(cls) -> set[str]:
        return super().param_keys() | {cls.UNIT}

    @classmethod
    def read_params(cls, params, control_models) -> tuple[dict[str, object], list[str]]:
        """Its strength, and the unit's settings, its model looked up in `control_models`."""
        out, unused = super().read_params(params, control_models)
        if cls.UNIT in params:
            unit, not_used = read_unit(params[cls.UNIT], control_models)
            out |= unit
            unused += not_used
        return out, unused

    @classmethod
    def claims(cls, req: Request) -> bool:
        return req.control_image is not None

    @classmethod
    def check(cls, req: Request, limits: Limits) -> None:
        """The ControlNet unit's settings (whether the control type has a model, the
        engine's ControlNets say)."""
        if req.mask is not None:
            raise RequestError("mask", "inpainting with a ControlNet is not supported yet")
        req.control_weight = check_number("control_weight", req.control_weight, 0.0,
                                          MAX_CONTROL_WEIGHT)  # fmt: skip
        req.guidance_start = check_number("guidance_start", req.guidance_start, 0.0, 1.0)
        req.guidance_end = check_number("guidance_end", req.guidance_end, 0.0, 1.0)
        if req.guidance_end < req.guidance_start:
            raise RequestError("guidance_end", f"{req.guidance_end:g} is before guidance_start "
                               f"{req.guidance_start:g}")  # fmt: skip
        if req.control_mode not in CONTROL_MODES:
            raise RequestError(
                "control_mode", f"{req.control_mode!r}; choose one of {CONTROL_MODES}"
            )
        if req.preprocessor not in PREPROCESSORS:
            raise RequestError(
                "preprocessor", f"{req.preprocessor!r}; choose one of {PREPROCESSORS}"
            )

    @classmethod
    def share(cls, req: Request) -> float:
        return req.strength if req.image is not None else 1.0

    @classmethod
    def params(cls, req: Request, given: Guided | None = None) -> dict[str, object]:
        strength = f"{req.strength:g}" if req.image is not None else None
        return {"Denoising strength": strength, cls.UNIT: given.unit if given else None}

    def __init__(self, engine):
        super().__init__(engine)
        e = engine
        self.controls = ControlNets(dict(e.settings.control_models), e.txt2img, e.device, e.dtype)

    def inputs(self, req: Request) -> Guided:
        given = Guided()
        if req.image is not None:
            given.picture = fitted_picture(req, self.engine.limits)
        given.control, preprocessor = sketch_control(req, self.engine.limits)
        model = self.controls.pipelines(req.control_type)[2]  # loaded here, before the lock
        given.unit = unit_infotext(req, preprocessor, model)
        return given

    def unchanged(self, req: Request, given: Guided) -> Image.Image | None:
        return unchanged_picture(req, given.picture)

    def pipeline(self, req: Request, given: Guided) -> tuple[Any, dict]:
        txt2img, img2img, _ = self.controls.pipelines(req.control_type)
        pipe = txt2img if given.picture is None else img2img
        return pipe, control_call(req, given.control, given.picture)

    def drawing(self, req: Request, pipe: Any) -> AbstractContextManager:
        return soft_injection(pipe.controlnet, req.control_mode == "prompt")


def control_preview(req: Request, limits: Limits) -> Image.Image:
    """The control image a sketch request draws from (the lines its preprocessor found)."""
    validate_shared(req, limits)
    Sketch.check(req, limits)
    return sketch_control(req, limits)[0]
