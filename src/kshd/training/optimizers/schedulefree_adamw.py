"""`train/optimizer=schedulefree_adamw`: schedule-free AdamW (Meta's schedulefree).

It takes its gradients at y, an interpolation between the averaged weights x and the base
sequence z; x is what is sampled, checkpointed and saved. `eval` moves the weights to x and
`train` back to y (its own .eval() / .train(), which kohya calls around sampling and saving).
The loop switches lazily: to y before each forward pass, to x before validation, checkpoints
and the final save, so a resumed run, which restores x and the optimizer in eval mode, makes
the same x -> y step as the run that wrote the checkpoint (bit-identical resume).
"""

from __future__ import annotations

import logging

import torch

from kshd.config.schema_optimizers import ScheduleFreeAdamwSettings
from kshd.training.optimizers.base import OptimizerKind

log = logging.getLogger(__name__)


class ScheduleFreeAdamw(OptimizerKind):
    kind = "schedulefree_adamw"
    settings: ScheduleFreeAdamwSettings

    def schedule(self, name: str, warmup_steps: int) -> tuple[str, int]:
        if name != "constant" or warmup_steps:
            log.warning(
                "train.lr_scheduler=%s (lr_warmup_steps %d) is not used with "
                "train/optimizer=schedulefree_adamw: it trains at a constant rate (warm up with "
                "train.optimizer.warmup_steps); set train.lr_scheduler=constant to silence this",
                name,
                warmup_steps,
            )
        return "constant", 0

    def build(self, params: list, lr: float) -> torch.optim.Optimizer:
        from schedulefree import AdamWScheduleFree

        warmup = self.settings.warmup_steps
        return AdamWScheduleFree(params, **self.adam_kwargs(lr), warmup_steps=warmup)

    def train(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.train()

    def eval(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.eval()
