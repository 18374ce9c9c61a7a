"""One denoising step's loss, as diffusers' train_text_to_image_lora.py computes it (noise offset,
v-prediction, min-SNR weights, per-drawing weights), and kohya's masked loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kshd.config.schema_train import TrainSettings
from kshd.training.components import Components


def diffusion_loss(
    c: Components,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    unet,
    s: TrainSettings,
    item_weights: torch.Tensor | None = None,
    added_cond: dict | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One denoising step's loss: noise (+ offset), timesteps, target, optional min-SNR weights;
    `item_weights` per drawing (train.prior_loss_weight for the regularization drawings);
    `added_cond`: SDXL's pooled text and size conditioning; `mask` [B, 1, h, w] in [0, 1]
    (train.masked_loss: the drawings' alpha on the latent grid)."""
    noise = torch.randn_like(latents)
    if s.noise_offset:
        noise += s.noise_offset * torch.randn(
            (latents.shape[0], latents.shape[1], 1, 1), device=latents.device
        )
    sched = c.noise_scheduler
    timesteps = torch.randint(
        0, sched.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    ).long()
    noisy = sched.add_noise(latents, noise, timesteps)
    v_pred = sched.config.prediction_type == "v_prediction"
    target = sched.get_velocity(latents, noise, timesteps) if v_pred else noise
    pred = unet(
        noisy, timesteps, encoder_hidden_states, added_cond_kwargs=added_cond, return_dict=False
    )[0]
    if s.snr_gamma is None and item_weights is None and mask is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    if mask is not None:
        loss = masked(loss, mask)
    loss = loss.mean(dim=list(range(1, loss.ndim)))
    if item_weights is not None:
        loss = loss * item_weights.to(loss)
    if s.snr_gamma is None:
        return loss.mean()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(sched, timesteps)
    weights = torch.stack([snr, s.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / (snr + 1) if v_pred else weights / snr
    return (loss * weights).mean()


def masked(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """kohya's apply_masked_loss (sd-scripts, library/custom_train_functions.py): the per-element
    loss times the mask, area-resized to the loss's grid (already on it when it comes from our
    dataset or cache); the caller then takes the mean over every element as kohya does, so a
    half-transparent drawing's loss is half as large, not renormalised by the mask's sum."""
    mask = mask.to(loss)
    if mask.shape[-2:] != loss.shape[-2:]:
        mask = F.interpolate(mask, size=loss.shape[-2:], mode="area")
    return loss * mask
