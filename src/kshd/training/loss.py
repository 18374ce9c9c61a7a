"""One denoising step's loss, as diffusers' train_text_to_image_lora.py computes it (noise offset,
v-prediction, min-SNR weights, per-drawing weights).
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
) -> torch.Tensor:
    """One denoising step's loss: noise (+ offset), timesteps, target, optional min-SNR weights;
    `item_weights` per drawing (train.prior_loss_weight for the regularization drawings);
    `added_cond`: SDXL's pooled text and size conditioning."""
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
    if s.snr_gamma is None and item_weights is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
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
