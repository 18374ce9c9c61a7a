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


@dataclass(frozen=True)
class LycorisSettings(AdapterSettings):
    """The keys of the kinds LyCORIS names (LoHa, LoKr, DoRA): 3x3 convs at their own rank
    and alpha (kohya's conv_dim / conv_alpha; null: `train.rank` / `train.alpha`)."""

    conv_rank: int | None = field(metadata=DEFINES_RESULT)
    conv_alpha: float | None = field(metadata=DEFINES_RESULT)

    def validate(self) -> None:
        super().validate()
        require(self.conv_rank is None or self.conv_rank >= 1, "train.adapter.conv_rank",
                self.conv_rank, "null (train.rank) or a rank of at least 1")  # fmt: skip


@register_variant(AdapterSettings, "dora")
@dataclass(frozen=True)
class DoraSettings(LycorisSettings):
    """DoRA: LoRA whose product is renormalized to a trained magnitude per output channel
    (peft's `use_dora`; LyCORIS' `dora_wd` with `wd_on_output`)."""


@register_variant(AdapterSettings, "loha")
@dataclass(frozen=True)
class LohaSettings(LycorisSettings):
    """LoHa: the Hadamard product of two low-rank products. `use_tucker`: a 3x3 conv's delta
    from a Tucker core (LyCORIS' use_tucker, peft's use_effective_conv2d) rather than a flat
    matrix."""

    use_tucker: bool = field(metadata=DEFINES_RESULT)


@register_variant(AdapterSettings, "lokr")
@dataclass(frozen=True)
class LokrSettings(LycorisSettings):
    """LoKr: the Kronecker product of a small matrix and a (low-rank) larger one. `factor`:
    the small side's size (-1: near the square root), `decompose_both`: the small one low-rank
    too, `use_tucker`: as LoHa's."""

    factor: int = field(metadata=DEFINES_RESULT)
    decompose_both: bool = field(metadata=DEFINES_RESULT)
    use_tucker: bool = field(metadata=DEFINES_RESULT)

    def validate(self) -> None:
        super().validate()
        require(self.factor == -1 or self.factor >= 1, "train.adapter.factor", self.factor,
                "-1 (near the square root) or a factor of at least 1")  # fmt: skip
