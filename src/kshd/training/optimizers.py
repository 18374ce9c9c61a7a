"""The optimizer over the adapter's parameters (`train.use_8bit_adam`: bitsandbytes' AdamW8bit)."""

from __future__ import annotations

import torch

from kshd.config.schema_train import TrainSettings


def build_optimizer(params: list, s: TrainSettings) -> torch.optim.Optimizer:
    kw = {
        "lr": s.learning_rate,
        "betas": (s.adam_beta1, s.adam_beta2),
        "weight_decay": s.adam_weight_decay,
        "eps": s.adam_epsilon,
    }
    if not s.use_8bit_adam:
        return torch.optim.AdamW(params, **kw)
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ImportError(
            "train.use_8bit_adam=true needs bitsandbytes: pip install bitsandbytes (CUDA only)"
        ) from exc
    return bnb.optim.AdamW8bit(params, **kw)
