"""An exponential moving average of the adapter's trained weights (`train.ema_decay`).

Kept over the tensors the optimizer trains (the adapter's, in the UNet and any trained text
encoder), updated after every `train.ema_every`-th optimizer step with diffusers' `EMAModel`
arithmetic (`shadow -= (1 - decay) * (shadow - weight)`) and, with `train.ema_warmup`, its
default ramp: the n-th update uses min(ema_decay, (1 + (n - 1)) / (10 + (n - 1))), so the first
update copies the weights and a short run is not dominated by the random initial ones.

Why not `diffusers.training_utils.EMAModel` or `ema_pytorch.EMA` themselves: both keep their
state as Python objects (EMAModel's `shadow_params` list, ema-pytorch's copy of a whole model
plus buffers), where a checkpoint here is safetensors + JSON; EMAModel counts its own updates
(`ema_every` would need a second counter) and ema-pytorch deep-copies the model (the frozen base
too). Here the decay of an update follows from the optimizer step alone, so the only state is the
averaged tensors, saved in the adapter's own format (`Adapter.tensors`): a checkpoint's EMA is
drawn like its raw weights, and resuming puts them back bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from kshd.adapters.base import Adapter
from kshd.training.checkpoints import EmaWeights


def warmup_decay(decay: float, update: int) -> float:
    """diffusers' `EMAModel.get_decay` (no `update_after_step`, no power warmup) for the
    `update`-th update, 1-based: 0 for the first (a copy), then (1 + t) / (10 + t) up to `decay`."""
    t = update - 1
    return 0.0 if t <= 0 else min(decay, (1 + t) / (10 + t))


class AdapterEma:
    """The moving average of `params` (the optimizer's, in its order), fp32 beside them."""

    def __init__(self, params: Sequence[torch.Tensor], decay: float, every: int, warmup: bool):
        self.params = list(params)
        self.decay, self.every, self.warmup = decay, every, warmup
        self.shadow = [p.detach().to(torch.float32, copy=True) for p in self.params]

    def decay_at(self, update: int) -> float:
        """The decay of the `update`-th update (1-based)."""
        return warmup_decay(self.decay, update) if self.warmup else self.decay

    @torch.no_grad()
    def step(self, step: int) -> None:
        """After optimizer step `step` (1-based): an update when it is a multiple of `every`.
        The update's number is `step // every`, so a resumed run continues exactly."""
        if step % self.every:
            return
        one_minus = 1.0 - self.decay_at(step // self.every)
        for shadow, param in zip(self.shadow, self.params, strict=True):
            shadow.sub_(one_minus * (shadow - param.detach().to(torch.float32)))

    def record(self) -> dict:
        """What a checkpoint and the EMA files record of it."""
        return {"decay": self.decay, "every": self.every, "warmup": self.warmup}

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for a moment; the trained ones put back exactly."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, shadow in zip(self.params, self.shadow, strict=True):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, trained, strict=True):
                    param.copy_(value)

    def weights(self, adapter: Adapter, *parts) -> EmaWeights:
        """The averaged weights as `adapter.tensors(*parts)` gives the trained ones, and the
        EMA's settings: what a checkpoint keeps and the EMA files are made from."""
        with self.applied():  # copies: on the CPU `tensors` may hand out the parameters
            averaged = {k: v.clone() for k, v in adapter.tensors(*parts).items()}
        return EmaWeights(averaged, self.record())

    @torch.no_grad()
    def load_adapter_tensors(
        self, adapter: Adapter, state: Mapping[str, torch.Tensor], *parts
    ) -> None:
        """`weights`' tensors back into the average (resuming); the model's trained
        weights are left as they were."""
        with self.applied():
            adapter.load_tensors(state, *parts)
            for shadow, param in zip(self.shadow, self.params, strict=True):
                shadow.copy_(param.detach())
