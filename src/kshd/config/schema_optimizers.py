"""The `train.optimizer` config group (conf/train/optimizer/): which optimizer trains the adapter,
and the keys of that kind.

A variant group like `train.adapter`: `kind` picks the settings class, each kind's class adds
its own keys. The classes live here, not beside the optimizers' code (`kshd.training.optimizers`),
because every stage checks the whole config at load and a stage that trains nothing must not
import the optimizers' libraries. A new kind is one class here, its YAML in
conf/train/optimizer/ and its file in kshd/training/optimizers/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import DEFINES_RESULT, defining, register_variant, require, variant_base


@variant_base
@dataclass(frozen=True)
class OptimizerSettings:
    """The keys every kind has: Adam's moment decays, weight decay and epsilon (each library's
    own argument names)."""

    kind: str
    betas: tuple[float, float] = field(metadata=DEFINES_RESULT)
    weight_decay: float = field(metadata=DEFINES_RESULT)
    eps: float = field(metadata=DEFINES_RESULT)

    def fingerprint(self) -> dict:
        """The optimizer's part of the resume fingerprint: its kind and its marked keys."""
        return {"optimizer": {"kind": self.kind, **defining(self)}}

    def validate(self) -> None:
        key = "train.optimizer"
        ok = all(0 <= b < 1 for b in self.betas)
        require(ok, f"{key}.betas", list(self.betas), "two numbers in [0, 1), e.g. [0.9, 0.999]")
        require(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "a number >= 0")
        require(self.eps > 0, f"{key}.eps", self.eps, "a number > 0 (1.0e-8 is Adam's)")


@register_variant(OptimizerSettings, "adamw")
@dataclass(frozen=True)
class AdamwSettings(OptimizerSettings):
    """torch's AdamW at `train.learning_rate`, as diffusers' train_text_to_image_lora.py trains."""

    def fingerprint(self) -> dict:
        """Under the names the keys had as `train.*` keys (adam_beta1 ..., use_8bit_adam): a
        checkpoint written before optimizers were a group still resumes."""
        return {
            "adam_beta1": self.betas[0],
            "adam_beta2": self.betas[1],
            "adam_weight_decay": self.weight_decay,
            "adam_epsilon": self.eps,
            "use_8bit_adam": self.kind == "adamw8bit",
        }


@register_variant(OptimizerSettings, "adamw8bit")
@dataclass(frozen=True)
class Adamw8bitSettings(AdamwSettings):
    """bitsandbytes' AdamW8bit (CUDA only): AdamW with its moments stored in 8 bits."""


@register_variant(OptimizerSettings, "prodigy")
@dataclass(frozen=True)
class ProdigySettings(OptimizerSettings):
    """Prodigy (prodigyopt): AdamW that estimates its own step size d. It steps at `lr` times d,
    so `lr` stays 1.0 and `train.learning_rate` is not used; `d_coef` is the knob to tune."""

    lr: float = field(metadata=DEFINES_RESULT)
    d_coef: float = field(metadata=DEFINES_RESULT)
    decouple: bool = field(metadata=DEFINES_RESULT)
    use_bias_correction: bool = field(metadata=DEFINES_RESULT)
    safeguard_warmup: bool = field(metadata=DEFINES_RESULT)

    def validate(self) -> None:
        super().validate()
        require(self.lr > 0, "train.optimizer.lr", self.lr, "a number > 0 (Prodigy wants 1.0)")
        require(self.d_coef > 0, "train.optimizer.d_coef", self.d_coef, "a number > 0 (1 or 2)")


@register_variant(OptimizerSettings, "schedulefree_adamw")
@dataclass(frozen=True)
class ScheduleFreeAdamwSettings(OptimizerSettings):
    """Schedule-free AdamW (Meta's schedulefree) at `train.learning_rate`, at a constant rate:
    it averages the weights itself, so no lr schedule; a warmup is its own `warmup_steps`."""

    warmup_steps: int = field(metadata=DEFINES_RESULT)

    def validate(self) -> None:
        super().validate()
        require(
            self.warmup_steps >= 0,
            "train.optimizer.warmup_steps",
            self.warmup_steps,
            "a whole number >= 0",
        )
