"""`caption.kind=tags_and_blip2`: a WD tagger's tags, then a BLIP-2 sentence, in one caption
(Illustrious-XL was trained on Danbooru tags mixed with natural language).

Composes the two captioners: each gets its own settings, made from this kind's fields, and the
cache identity hashes every field of both (the kind's marked fields)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from PIL import Image

from kshd.captioners.base import Captioner, register_captioner
from kshd.captioners.blip2 import Blip2Captioner
from kshd.captioners.wd_tagger import LABEL_FILE, WdTagger, tag_trigger
from kshd.config.schema_caption import (
    Blip2CaptionSettings,
    TagsAndBlip2CaptionSettings,
    WdTaggerCaptionSettings,
)


def part_settings(settings: TagsAndBlip2CaptionSettings, cls: type, **renamed: str):
    """`cls`'s settings from this kind's fields of the same name (`renamed`: field -> ours)."""
    values = {
        f.name: getattr(settings, renamed.get(f.name, f.name)) for f in dataclasses.fields(cls)
    }
    return cls(**values)


@register_captioner(TagsAndBlip2CaptionSettings)
class TagsAndBlip2(Captioner):
    """The tagger's tags, then BLIP-2's sentence: `<tags>, <sentence>`."""

    model_keys = {"model": "config.json", "tagger_model": LABEL_FILE}

    def __init__(self, settings: TagsAndBlip2CaptionSettings):
        super().__init__(settings)
        tagger = part_settings(settings, WdTaggerCaptionSettings, model="tagger_model")
        self.tagger = WdTagger(tagger, "caption.tagger_model")
        self.blip2 = Blip2Captioner(part_settings(settings, Blip2CaptionSettings))

    @classmethod
    def place_trigger(cls, settings: TagsAndBlip2CaptionSettings, caption: str) -> str:
        """In the tags' artist slot (`caption.trigger_position=artist`), or at the start or end."""
        return tag_trigger(settings, caption, settings.tagger_model, "caption.tagger_model")

    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        tags = self.tagger.caption(images, keys)
        sentences = self.blip2.caption(images, keys)
        return [", ".join(t for t in pair if t) for pair in zip(tags, sentences, strict=True)]
