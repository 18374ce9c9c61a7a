"""The frozen base and its trainable adapters: what trains, in which dtype, and the frozen parts
released while every input is cached and reloaded for validation.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import replace

import torch

from kshd.adapters.base import Adapter
from kshd.config.errors import UserError
from kshd.config.schema_train import TrainSettings
from kshd.training.batches import (
    DrawingDataset,
)
from kshd.training.components import Components, load_frozen, place_for_training

log = logging.getLogger(__name__)


def prediction_type(c: Components, s: TrainSettings) -> None:
    """The target the LoRA learns: train.prediction_type, else the base's (load_components set
    model.prediction_type on the schedule). A zero-terminal-SNR schedule has no epsilon target."""
    if s.prediction_type:
        c.noise_scheduler.register_to_config(prediction_type=s.prediction_type)
    config = c.noise_scheduler.config
    if (
        getattr(config, "rescale_betas_zero_snr", False)
        and config.prediction_type != "v_prediction"
    ):
        raise UserError(
            f"train.prediction_type={config.prediction_type} with model.zero_terminal_snr=true: "
            "at zero terminal SNR only v_prediction can be learned; drop train.prediction_type "
            "(the model's v_prediction is used)"
        )


def freeze_and_adapt(c: Components, s: TrainSettings, adapter: Adapter, device, dtype) -> list:
    """Frozen base in the compute dtype, the adapter on the UNet (and text encoders) in fp32."""
    prediction_type(c, s)
    c.vae.requires_grad_(False)
    for encoder in c.text_encoders:
        encoder.requires_grad_(False)
        encoder.eval()
    adapter.inject(c.unet)
    if s.train_text_encoder:  # both of SDXL's, as kohya trains them
        for encoder in c.text_encoders:
            adapter.inject(encoder, text_encoder=True)
            encoder.train()
    modules = [c.unet, *c.text_encoders] if s.train_text_encoder else [c.unet]
    place_for_training(
        [c.vae, *c.text_encoders, c.unet], modules, device, dtype, keep_fp32=vae_fp32(c)
    )
    if s.gradient_checkpointing:
        c.unet.enable_gradient_checkpointing()
        if s.train_text_encoder:
            for encoder in c.text_encoders:
                encoder.gradient_checkpointing_enable()
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def vae_fp32(c: Components) -> tuple:
    return (c.vae,) if c.vae_fp32 else ()


def release_frozen(c: Components, data: DrawingDataset, stats: dict, s: TrainSettings) -> bool:
    """Every latent and caption embedding is cached: no step needs the VAE or the text encoder,
    so they leave the device and the process (weights to `meta`) until validation reloads them."""
    if c.source is None or s.train_text_encoder or data.texts is None or stats.get("live", 1):
        return False
    for module in (c.vae, *c.text_encoders):
        module.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("inputs: all cached; the VAE and the text encoders are released until validation")
    return True


def reload_frozen(c: Components, device, dtype: torch.dtype) -> Components:
    """c with its text encoders and VAE loaded again from c.source, frozen and placed as
    training placed them (the UNet and the rest shared with c)."""
    encoders, vae = load_frozen(*c.source)
    for module in (*encoders, vae):
        module.requires_grad_(False).eval()
    place_for_training([*encoders, vae], [], device, dtype, keep_fp32=(vae,) if c.vae_fp32 else ())
    return replace(c, text_encoder=encoders[0], vae=vae, text_encoder_2=(encoders + (None,))[1])
