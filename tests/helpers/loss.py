"""One batch's training loss with the noise and timesteps drawn from a fixed seed, so that two
calls differ only by the per-drawing weights or the mask they are given."""

from __future__ import annotations

import torch

from kshd.training.loss import diffusion_loss


def seeded_loss(c, s, latents, hidden, weights=None, mask=None) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        return diffusion_loss(c, latents, hidden, c.unet, s, weights, None, mask).item()
