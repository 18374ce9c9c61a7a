"""The captioners `caption.kind` can name: importing this module registers each of them."""

from __future__ import annotations

from kshd.captioners import blip2, none, tags_and_blip2, wd_tagger
from kshd.captioners.base import Captioner, captioners
from kshd.config.errors import ConfigError
from kshd.config.schema_caption import CaptionSettings

BUILT_IN = (
    blip2.Blip2Captioner,
    none.NoneCaptioner,
    wd_tagger.WdTagger,
    tags_and_blip2.TagsAndBlip2,
)


def captioner_class(settings: CaptionSettings) -> type[Captioner]:
    """The captioner of the settings' kind (a class: nothing is loaded until one is made)."""
    found = captioners().get(type(settings))
    if found is None:
        raise ConfigError(
            f"config key `caption.kind` = {settings.kind!r} has no captioner: register one with "
            "@register_captioner in a module that kshd.captioners.registry imports."
        )
    return found


def caption_identity(settings: CaptionSettings) -> str:
    """The captions' cache identity under these settings, without loading a model."""
    return captioner_class(settings).identity(settings)
