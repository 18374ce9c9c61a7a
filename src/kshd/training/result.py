"""What a training run reports: steps, losses, speed, memory."""

from __future__ import annotations

import math
import resource
from collections.abc import Callable
from dataclasses import dataclass, field

from kshd.config.schema_train import TrainSettings
from kshd.training.checkpoints import EmaWeights, Progress


@dataclass
class TrainResult:
    progress: Progress = field(default_factory=Progress)
    epochs: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    resumed_from: str | None = None
    latents: dict = field(default_factory=dict)
    captions: dict = field(default_factory=dict)  # captions cut at train.max_token_length
    latent_std: float | None = None  # the first trained batch's scaled latents: about 1 if right
    ema: EmaWeights | None = None  # the final EMA of the adapter's weights (train.ema_decay)

    @property
    def steps(self) -> int:
        return self.progress.step

    @property
    def history(self) -> list[dict]:
        return self.progress.history

    def metrics(self) -> dict:
        h = self.history
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "final_loss": h[-1]["loss"] if h else None,
            "mean_loss_last_epoch": _mean_last_epoch(h),
            "images_per_s": round(h[-1]["images_per_s"], 4) if h else None,
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "resumed_from": self.resumed_from,
            "latent_std": None if self.latent_std is None else round(self.latent_std, 4),
        }


def _mean_last_epoch(history: list[dict]) -> float | None:
    if not history:
        return None
    last = [h["loss"] for h in history if h["epoch"] == history[-1]["epoch"]]
    return sum(last) / len(last)


def peak_rss_mb() -> float:
    """This process's own peak resident memory (MB). Linux's VmHWM, not getrusage's ru_maxrss:
    ru_maxrss keeps the parent's resident size at fork across exec, so a stage started by a
    large process would report the parent's memory as its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def total_steps(s: TrainSettings, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps, epochs): max_train_steps wins over epochs, as in the reference script."""
    per_epoch = math.ceil(batches_per_epoch / s.gradient_accumulation_steps)
    if s.max_train_steps:
        return s.max_train_steps, math.ceil(s.max_train_steps / per_epoch)
    return per_epoch * s.epochs, s.epochs


LogFn = Callable[[dict], None]
