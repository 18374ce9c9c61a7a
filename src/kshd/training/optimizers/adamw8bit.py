"""`train/optimizer=adamw8bit`: bitsandbytes' AdamW8bit, AdamW with 8-bit moments (CUDA only;
bitsandbytes is the `cuda` extra, which `make setup` installs where nvidia-smi is)."""

from __future__ import annotations

import torch

from kshd.config.errors import ConfigError
from kshd.training.optimizers.base import OptimizerKind


class Adamw8bit(OptimizerKind):
    kind = "adamw8bit"

    def check_device(self, device: torch.device) -> None:
        if torch.device(device).type != "cuda":
            raise ConfigError(
                "train/optimizer=adamw8bit needs a CUDA GPU (bitsandbytes' 8-bit AdamW) and this "
                f"run trains on {torch.device(device).type}: choose `train/optimizer=adamw` (the "
                "same AdamW with 32-bit moments), or train on a CUDA GPU."
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError(
                "train/optimizer=adamw8bit (memory=gpu_12gb and gpu_16gb choose it) needs "
                "bitsandbytes, which is not installed: `make setup` on this CUDA machine installs "
                "it (or pip install bitsandbytes), or choose `train/optimizer=adamw`."
            ) from None

    def build(self, params: list, lr: float) -> torch.optim.Optimizer:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ImportError(
                "train/optimizer=adamw8bit needs bitsandbytes: pip install bitsandbytes (CUDA "
                "only), or choose `train/optimizer=adamw`"
            ) from exc
        return bnb.optim.AdamW8bit(params, **self.adam_kwargs(lr))
