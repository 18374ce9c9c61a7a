"""`caption.kind=none`: no model; captions come only from the reviewed overrides and kohya
`.txt` sidecars.

A drawing with neither gets an empty caption, so it trains on the trigger phrase alone, and the
caption stage names it (log and report): what kohya's scripts do with an image that has no
caption file, so a folder captioned for kohya trains here as it did there.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from kshd.captioners.base import Captioner, register_captioner
from kshd.config.schema_caption import NoneCaptionSettings


@register_captioner(NoneCaptionSettings)
class NoneCaptioner(Captioner):
    """An empty caption for every drawing that no override or sidecar covers."""

    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        return [""] * len(images)
