"""The `train.adapter` config group (conf/train/adapter/): which kind of adapter trains, and the
keys of that kind.

A variant group: `kind` picks the settings class, and each kind's class adds its own keys. The
classes live here rather than beside the adapters' code (`kshd.adapters.<kind>`) because every
stage checks the whole config at load: a stage that trains nothing (prepare, caption) would
otherwise import, and depend on, the adapters. A new kind is one class here, its YAML in
conf/train/adapter/ and its file in kshd/adapters/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import DEFINES_RESULT, defining, register_variant, require, variant_base


@variant_base
@dataclass(frozen=True)
class AdapterSettings:
    """The keys every kind has: the modules it adapts in the UNet and, with
    `train.train_text_encoder`, in the text encoder(s) (peft's module-name suffixes). The rank
    and alpha are `train.rank` / `train.alpha` (kohya's network_dim / network_alpha)."""

    kind: str
    target_modules: tuple[str, ...] = field(metadata=DEFINES_RESULT)
    text_encoder_target_modules: tuple[str, ...] = field(metadata=DEFINES_RESULT)

    def fingerprint(self) -> dict:
        """The adapter's part of the resume fingerprint: its kind and its marked keys."""
        return {"adapter": {"kind": self.kind, **defining(self)}}

    def validate(self) -> None:
        require(
            len(self.target_modules) >= 1,
            "train.adapter.target_modules",
            list(self.target_modules),
            "at least one module name (e.g. to_q)",
        )


@register_variant(AdapterSettings, "lora")
@dataclass(frozen=True)
class LoraSettings(AdapterSettings):
    """LoRA (peft), on the attention projections by default, as diffusers' script trains it."""

    def fingerprint(self) -> dict:
        """The targets under the names they had as `train.*` keys: a LoRA (or LoCon, the same
        tensors) checkpoint written before adapters were a group still resumes."""
        return defining(self)


@register_variant(AdapterSettings, "locon")
@dataclass(frozen=True)
class LoconSettings(LoraSettings):
    """LoCon: LoRA on every linear layer of the transformer blocks and the ResNet convs
    (kohya's LoRA with conv_dim / conv_alpha), trained by the same code as LoRA."""
