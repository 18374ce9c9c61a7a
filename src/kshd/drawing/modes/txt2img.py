"""Text to image: the prompt alone, drawn at the request's size by the base model's pipeline."""

from __future__ import annotations

from typing import Any

from kshd.drawing.modes.base import Mode
from kshd.drawing.request import Request


class TextToImage(Mode):
    name = "txt2img"

    @classmethod
    def claims(cls, req: Request) -> bool:
        return True  # registered first: every request that no other mode claims

    def pipeline(self, req: Request, given: None) -> tuple[Any, dict]:
        return self.engine.txt2img, {"width": req.width, "height": req.height}
