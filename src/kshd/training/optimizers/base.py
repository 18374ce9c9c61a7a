"""One kind of optimizer (`train.optimizer.kind`) behind the training loop's seam.

A kind builds its torch optimizer over the adapter's parameters, says at which learning rate and
under which lr schedule it trains, refuses a device it cannot run on before any work, and
switches modes where it has them: schedule-free trains one sequence of weights and samples,
checkpoints and saves another, as kohya's optimizer_train_fn / optimizer_eval_fn switch it.
Its state (Prodigy's d, schedule-free's z and weight sum) is the optimizer's state_dict, which
the checkpoint keeps whole.
"""

from __future__ import annotations

import torch

from kshd.config.schema_optimizers import OptimizerSettings


class OptimizerKind:
    """A kind's behaviour; the defaults are plain AdamW's (no modes, any device, the
    configured learning rate and schedule)."""

    kind = ""

    def __init__(self, settings: OptimizerSettings) -> None:
        self.settings = settings

    def check_device(self, device: torch.device) -> None:
        """Refuse, in one line, a device this kind cannot train on, or a machine without the
        library it needs (before models load)."""

    def learning_rate(self, train_lr: float) -> float:
        """The rate the optimizer steps at: `train.learning_rate` unless the kind has its own."""
        return train_lr

    def schedule(self, name: str, warmup_steps: int) -> tuple[str, int]:
        """The lr scheduler (diffusers' name) and its warmup steps this kind trains under."""
        return name, warmup_steps

    def build(self, params: list, lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def train(self, optimizer: torch.optim.Optimizer) -> None:
        """Put the weights in their training state: before every forward pass."""

    def eval(self, optimizer: torch.optim.Optimizer) -> None:
        """Put the weights in the state that is sampled and saved: before validation, every
        checkpoint and the final save."""

    def report(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """What the kind adds to each step's logged row (wandb; loss.csv keeps its columns)."""
        return {}

    def adam_kwargs(self, lr: float) -> dict:
        """The keyword arguments every Adam-like kind takes, from the settings every kind has."""
        s = self.settings
        return {"lr": lr, "betas": tuple(s.betas), "weight_decay": s.weight_decay, "eps": s.eps}
