"""The captioner interface, its registry by settings class, and the text cleanup free-text
captions share (BLIP-2's, a kohya `.txt` sidecar's)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, TypeVar

from PIL import Image

from kshd.config.fill import defining
from kshd.config.schema_caption import CaptionSettings
from kshd.data.captioning import with_trigger


def short_hash(value: object) -> str:
    """16 hex digits of the sha256 of `repr(value)`: the cache identity's form."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


class Captioner(ABC):
    """Captions batches of images. Made only when something needs captioning: `__init__` loads
    the model, once; `identity` and `model_keys` are read from the settings without it."""

    # The settings fields naming a model folder or Hub id it loads, each with the file that
    # marks a usable folder: the caption stage checks them before anything is loaded.
    model_keys: ClassVar[Mapping[str, str]] = {}

    def __init__(self, settings: CaptionSettings):
        self.settings = settings

    @classmethod
    def identity(cls, settings: CaptionSettings) -> str:
        """The cache key's first half: the kind and the fields marked DEFINES_RESULT. A caption
        cached under it is what this captioner would make again, so it is reused."""
        return f"{settings.kind}-{short_hash(tuple(defining(settings).items()))}"

    @classmethod
    def place_trigger(cls, settings: CaptionSettings, caption: str) -> str:
        """A training caption (this captioner's, a sidecar's or an override's) with the trigger
        phrase at `caption.trigger_position`. A captioner whose captions have an order of their
        own (tags) may give the trigger its slot there."""
        return with_trigger(caption, settings.trigger_phrase, settings.trigger_position)

    @abstractmethod
    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        """One text per RGB image. `keys` are the images' cache keys, the same in every run: a
        captioner that samples seeds the batch from them, so a resumed run makes the same."""


_CAPTIONERS: dict[type[CaptionSettings], type[Captioner]] = {}
C = TypeVar("C", bound=type[Captioner])


def register_captioner(settings_class: type[CaptionSettings]):
    """Registers the decorated Captioner subclass for a `caption.kind`'s settings class."""

    if not issubclass(settings_class, CaptionSettings):
        raise TypeError(f"{settings_class.__name__} must subclass CaptionSettings")

    def register(cls: C) -> C:
        if not issubclass(cls, Captioner):
            raise TypeError(f"{cls.__name__} must subclass Captioner")
        _CAPTIONERS[settings_class] = cls
        return cls

    return register


def captioners() -> dict[type[CaptionSettings], type[Captioner]]:
    """The registered captioners, by their settings class."""
    return dict(_CAPTIONERS)


def clean_caption(raw: str, prompt: str) -> str:
    """Drop the echoed prompt, unprintable characters, repeated words and stray whitespace."""
    text = unicodedata.normalize("NFC", raw).replace("\ufffd", " ")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    text = re.sub(r"\b(\w+)(?:\s+\1\b)+", r"\1", text, flags=re.IGNORECASE)
    return text.strip(" ,.;:")
