"""`train/optimizer=prodigy`: Prodigy (prodigyopt), AdamW that estimates its own step size d.

It steps at lr * d, so its YAML's `lr` (1.0, as kohya's guides set --learning_rate) is the rate
and `train.learning_rate`, AdamW's 1e-4, is not used: switching to Prodigy cannot leave it
10,000 times too slow. d and its running sums live in the param groups of its state_dict,
which the checkpoint keeps (exact resume).
"""

from __future__ import annotations

import logging

import torch

from kshd.config.schema_optimizers import ProdigySettings
from kshd.training.optimizers.base import OptimizerKind

log = logging.getLogger(__name__)


class Prodigy(OptimizerKind):
    kind = "prodigy"
    settings: ProdigySettings

    def learning_rate(self, train_lr: float) -> float:
        return self.settings.lr

    def build(self, params: list, lr: float) -> torch.optim.Optimizer:
        from prodigyopt import Prodigy as ProdigyOpt

        s = self.settings
        if lr <= 0.1:  # kohya warns the same way
            log.warning(
                "train.optimizer.lr=%s: Prodigy wants about 1.0 (it multiplies the step size "
                "Prodigy estimates); tune train.optimizer.d_coef instead",
                lr,
            )
        log.info("Prodigy at lr %s times its estimate d (train.learning_rate is not used)", lr)
        return ProdigyOpt(
            params,
            **self.adam_kwargs(lr),
            d_coef=s.d_coef,
            decouple=s.decouple,
            use_bias_correction=s.use_bias_correction,
            safeguard_warmup=s.safeguard_warmup,
        )

    def report(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """The rate Prodigy actually steps at, d * lr (kohya logs it as lr/d*lr)."""
        group = optimizer.param_groups[0]
        return {"d*lr": group["d"] * group["lr"]}
