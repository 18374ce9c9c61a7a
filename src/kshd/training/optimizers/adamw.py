"""`train/optimizer=adamw`: torch's AdamW, as diffusers' train_text_to_image_lora.py trains."""

from __future__ import annotations

import torch

from kshd.training.optimizers.base import OptimizerKind


class Adamw(OptimizerKind):
    kind = "adamw"

    def build(self, params: list, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, **self.adam_kwargs(lr))
