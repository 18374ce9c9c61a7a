"""Which drawings an epoch takes, in which order: the same in every run and every process."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_members(n_train: int, n_reg: int, epoch: int) -> list[int]:
    """The items of an epoch: every training drawing, and as many regularization drawings
    (kohya's balance), taken in turn across epochs so that each is used (repeated when fewer)."""
    reg = [n_train + (epoch * n_train + k) % n_reg for k in range(n_train)] if n_reg else []
    return list(range(n_train)) + reg


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so every run and every process agrees.

    accelerate's prepared loader calls set_epoch itself on each pass, so a resume offset is
    set separately with skip_once and applies to the next pass only.
    """

    def __init__(self, n: int, seed: int, n_reg: int = 0):
        self.n, self.n_reg, self.seed, self.epoch, self.start = n, n_reg, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, start: int) -> None:
        self.start = start

    def __len__(self) -> int:
        return self.n * (2 if self.n_reg else 1) - self.start

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        members = epoch_members(self.n, self.n_reg, self.epoch)
        return iter(
            [members[i] for i in torch.randperm(len(members), generator=g).tolist()][start:]
        )
