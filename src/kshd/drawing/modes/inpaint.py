"""Inpainting: image to image on the masked part of a picture (white in `mask`), the rest kept
as the picture's own pixels (the mask, the pipeline and the paste back: `kshd.drawing.inpaint`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from kshd.config.schema_generate import Limits
from kshd.config.values import INPAINT_AREA_LABELS, INPAINT_AREAS
from kshd.drawing.inpaint import (
    inpaint_call,
    inpaint_inputs,
    inpaint_params,
    inpaint_pipeline,
    paste_back,
)
from kshd.drawing.modes.img2img import ImageToImage, Picture
from kshd.drawing.request import Request, RequestError, check_whole


@dataclass
class Masked(Picture):
    """The picture (at the drawing's size, or its own for "only masked") and its blurred mask."""

    mask: Image.Image


class Inpaint(ImageToImage):
    name = "inpaint"
    param_readers = ImageToImage.param_readers | {
        "Mask blur": ("mask_blur", lambda v: int(float(v))),
        "Masked area padding": ("inpaint_padding", lambda v: int(float(v))),
        "Inpaint area": ("inpaint_area", {v: k for k, v in INPAINT_AREA_LABELS.items()}.get),
    }

    @classmethod
    def claims(cls, req: Request) -> bool:
        return req.mask is not None

    @classmethod
    def check(cls, req: Request, limits: Limits) -> None:
        if req.image is None:
            raise RequestError("image", "inpainting needs the picture the mask is drawn on")
        req.mask_blur = check_whole("mask_blur", req.mask_blur, 0, 64)
        req.inpaint_padding = check_whole("inpaint_padding", req.inpaint_padding, 0, 256)
        if req.inpaint_area not in INPAINT_AREAS:
            raise RequestError(
                "inpaint_area", f"{req.inpaint_area!r}; choose one of {INPAINT_AREAS}"
            )

    @classmethod
    def params(cls, req: Request, given: Any = None) -> dict[str, object]:
        return super().params(req, given) | inpaint_params(req)

    def __init__(self, engine):
        super().__init__(engine)
        self._inpaint = None

    @property
    def pipe(self):
        """The inpainting pipeline (`generate.inpaint.model`'s UNet, or the base's), made when
        first used and again after a LoRA change."""
        if self._inpaint is None:
            e = self.engine
            self._inpaint = inpaint_pipeline(e.txt2img, e.settings.inpaint_model, e._adapter_into())
        return self._inpaint

    def forget(self) -> None:
        self._inpaint = None  # a separate inpainting UNet holds the LoRA of its own

    def inputs(self, req: Request) -> Masked:
        return Masked(*inpaint_inputs(req, self.engine.limits))

    def pipeline(self, req: Request, given: Masked) -> tuple[Any, dict]:
        call = inpaint_call(req, given.picture, given.mask)
        if self.engine.settings.inpaint_model and self.engine.lora_name:
            call["cross_attention_kwargs"] = {"scale": req.lora_scale}  # its UNet: LoRA unmerged
        return self.pipe, call

    def finish(self, images: list[Image.Image], given: Masked) -> list[Image.Image]:
        return [paste_back(im, given.picture, given.mask) for im in images]
