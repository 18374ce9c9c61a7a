"""Image to image: a picture (through the intake's checks, fitted to the drawing's size by the
resize mode) redrawn `strength` of the way from its own latents, with the base model's weights
(`AutoPipelineForImage2Image.from_pipe`: SD 1.x's or SDXL's pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from kshd.config.schema_generate import Limits
from kshd.drawing.modes.base import Mode
from kshd.drawing.request import Request, input_picture, resize_input


@dataclass
class Picture:
    """What an image-to-image request draws from: its picture at the drawing's size."""

    picture: Image.Image


def fitted_picture(req: Request, limits: Limits) -> Image.Image:
    """The request's picture read as the intake reads one and fitted to the drawing's size."""
    picture = input_picture(req.image, limits)
    return resize_input(picture, req.width, req.height, req.resize_mode)


def unchanged_picture(req: Request, picture: Image.Image | None) -> Image.Image | None:
    """At a strength that leaves no denoising step (diffusers runs int(steps x strength)),
    the picture comes back as it is."""
    if picture is not None and int(req.steps * req.strength) == 0:
        return picture
    return None


class ImageToImage(Mode):
    name = "img2img"
    param_readers = {"Denoising strength": ("strength", float)}

    @classmethod
    def claims(cls, req: Request) -> bool:
        return req.image is not None

    @classmethod
    def share(cls, req: Request) -> float:
        return req.strength

    @classmethod
    def params(cls, req: Request, given: Any = None) -> dict[str, object]:
        return {"Denoising strength": f"{req.strength:g}"}

    def __init__(self, engine):
        super().__init__(engine)
        self._pipe = None

    @property
    def pipe(self):
        """The image-to-image pipeline on the base model's components, made when first used."""
        if self._pipe is None:
            from diffusers import AutoPipelineForImage2Image

            self._pipe = AutoPipelineForImage2Image.from_pipe(self.engine.txt2img)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def inputs(self, req: Request) -> Picture:
        return Picture(fitted_picture(req, self.engine.limits))

    def unchanged(self, req: Request, given: Picture) -> Image.Image | None:
        return unchanged_picture(req, given.picture)

    def pipeline(self, req: Request, given: Picture) -> tuple[Any, dict]:
        return self.pipe, {"image": given.picture, "strength": req.strength}
