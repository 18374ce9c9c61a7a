"""The optimizer seam: `train.optimizer.kind` -> its kind's class (one file per kind)."""

from __future__ import annotations

from kshd.config.schema_optimizers import OptimizerSettings
from kshd.training.optimizers.adamw import Adamw
from kshd.training.optimizers.adamw8bit import Adamw8bit
from kshd.training.optimizers.base import OptimizerKind
from kshd.training.optimizers.prodigy import Prodigy
from kshd.training.optimizers.schedulefree_adamw import ScheduleFreeAdamw

KINDS: dict[str, type[OptimizerKind]] = {
    cls.kind: cls for cls in (Adamw, Adamw8bit, Prodigy, ScheduleFreeAdamw)
}


def optimizer_kind(settings: OptimizerSettings) -> OptimizerKind:
    """The configured optimizer of `train.optimizer` (its kind)."""
    if settings.kind not in KINDS:
        raise ValueError(
            f"no optimizer of kind {settings.kind!r}: expected one of {', '.join(sorted(KINDS))}"
        )
    return KINDS[settings.kind](settings)


__all__ = ["KINDS", "OptimizerKind", "optimizer_kind"]
