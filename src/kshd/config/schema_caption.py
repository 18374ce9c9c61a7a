"""The `caption` config group's schema: a variant group, one class per `caption.kind`.

The base holds what every captioner shares (the trigger phrase and where it goes, the reviewed
overrides, the batch size); each kind's subclass adds its own keys (conf/caption/<kind>.yaml).
They live here, not beside the captioners in `kshd.captioners`, because every stage checks the
whole config at load: were they there, training would import (and depend on) BLIP-2's code.
DEFINES_RESULT marks what changes a caption: the captioner's cache identity
(`kshd.captioners.base.Captioner.identity`) hashes the marked fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import DEFINES_RESULT, changes, register_variant, require, variant_base
from kshd.config.values import TRIGGER_POSITIONS


@variant_base
@dataclass(frozen=True)
class CaptionSettings:
    """`caption`: its `kind` names the captioner (the subclass registered under that name).

    The trigger is added after the cache, so it is not in the cache key, but info.csv and every
    stage after it carry it."""

    kind: str
    batch_size: int  # images per batch, saved to the cache together
    trigger_phrase: str = field(metadata=changes("caption", "dataset", "train", "evaluate"))
    trigger_position: str = field(metadata=changes("caption"))
    overrides: str  # a dvc.yaml dep by path: its content, not its name, changes the captions
    exclusions: str  # drawings left out of training (kshd captions exclude); a dvc.yaml dep too

    def validate(self) -> None:
        """Bad values named at config load, before a captioner loads its model."""
        require(
            self.trigger_position in TRIGGER_POSITIONS,
            "caption.trigger_position",
            self.trigger_position,
            "start or end",
        )
        require(self.batch_size >= 1, "caption.batch_size", self.batch_size, "a whole number >= 1")


@register_variant(CaptionSettings, "blip2")
@dataclass(frozen=True)
class Blip2CaptionSettings(CaptionSettings):
    """`caption.kind: blip2`: one English sentence per drawing from a BLIP-2 model, sampled with
    the original project's settings. The marked fields keep the order they had before captioners
    had kinds: their hash is the cache key BLIP-2 captions were saved under."""

    model: str = field(metadata=DEFINES_RESULT)
    prompt: str = field(metadata=DEFINES_RESULT)
    do_sample: bool = field(metadata=DEFINES_RESULT)
    temperature: float = field(metadata=DEFINES_RESULT)
    top_p: float = field(metadata=DEFINES_RESULT)
    repetition_penalty: float = field(metadata=DEFINES_RESULT)
    max_new_tokens: int = field(metadata=DEFINES_RESULT)
    seed: int = field(metadata=DEFINES_RESULT)  # each batch's seed derives from it

    def validate(self) -> None:
        super().validate()
        require(
            self.max_new_tokens >= 1,
            "caption.max_new_tokens",
            self.max_new_tokens,
            "a whole number >= 1",
        )
        require(0 < self.top_p <= 1, "caption.top_p", self.top_p, "a number in (0, 1]")
        require(self.temperature > 0, "caption.temperature", self.temperature, "a number > 0")


@register_variant(CaptionSettings, "none")
@dataclass(frozen=True)
class NoneCaptionSettings(CaptionSettings):
    """`caption.kind: none`: captions only from the overrides and `.txt` sidecars; no model."""
