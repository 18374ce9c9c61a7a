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
from kshd.config.values import TAG_TRIGGER_POSITIONS, TRIGGER_POSITIONS


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

    @staticmethod
    def trigger_positions() -> tuple[str, ...]:
        """Where the trigger may go: a sentence has a start and an end; tags have slots too."""
        return TRIGGER_POSITIONS

    def validate(self) -> None:
        """Bad values named at config load, before a captioner loads its model."""
        accepted = " or ".join(self.trigger_positions())
        if set(self.trigger_positions()) != set(TAG_TRIGGER_POSITIONS):
            accepted += " (artist only for tag captions: caption=wd_tagger or tags_and_blip2)"
        require(
            self.trigger_position in self.trigger_positions(),
            "caption.trigger_position",
            self.trigger_position,
            accepted,
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


@dataclass(frozen=True)
class TagOptions:
    """What a WD tagger's scores become: the keys of kohya's tag_images_by_wd14_tagger.py that
    change the text (a mixin of the tag kinds' settings, after CaptionSettings' fields)."""

    general_threshold: float = field(metadata=DEFINES_RESULT)
    character_threshold: float = field(metadata=DEFINES_RESULT)
    use_rating_tags: bool = field(metadata=DEFINES_RESULT)
    undesired_tags: tuple[str, ...] = field(metadata=DEFINES_RESULT)
    remove_underscore: bool = field(metadata=DEFINES_RESULT)
    always_first_tags: tuple[str, ...] = field(metadata=DEFINES_RESULT)

    @staticmethod
    def trigger_positions() -> tuple[str, ...]:
        return TAG_TRIGGER_POSITIONS

    def validate(self) -> None:
        super().validate()  # CaptionSettings' (the next class in a tag kind's MRO)
        for key in ("general_threshold", "character_threshold"):
            value = getattr(self, key)
            require(0 <= value <= 1, f"caption.{key}", value, "a probability in [0, 1]")


@register_variant(CaptionSettings, "wd_tagger")
@dataclass(frozen=True)
class WdTaggerCaptionSettings(TagOptions, CaptionSettings):
    """`caption.kind: wd_tagger`: Danbooru tags from a WD v3 tagger (SmilingWolf's ONNX models;
    a Hub id or a folder with model.onnx and selected_tags.csv), in NoobAI-XL's order."""

    model: str = field(metadata=DEFINES_RESULT)


@register_variant(CaptionSettings, "tags_and_blip2")
@dataclass(frozen=True)
class TagsAndBlip2CaptionSettings(TagOptions, Blip2CaptionSettings):
    """`caption.kind: tags_and_blip2`: a WD tagger's tags, then a BLIP-2 sentence (Illustrious-XL
    was trained on such mixed captions). `model` is BLIP-2's, as for caption=blip2;
    `tagger_model` the tagger's."""

    tagger_model: str = field(metadata=DEFINES_RESULT)
