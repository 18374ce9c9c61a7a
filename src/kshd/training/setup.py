"""The training run's parts before its loop: adapters on the frozen base, the dataset with its
caches, the optimizer and the loader (kept apart from the loop in `trainer`)."""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import replace
from pathlib import Path

import torch

from kshd.config import UserError
from kshd.training.batches import (
    BucketBatchSampler,
    DrawingDataset,
    ItemOptions,
    collate,
)
from kshd.training.settings import (
    Components,
    EpochSampler,
    TrainSettings,
    encode_caption_ids,
    load_frozen,
    place_for_training,
)

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


def freeze_and_adapt(c: Components, s: TrainSettings, device, dtype) -> list:
    """Frozen base in the compute dtype, LoRA adapters on the UNet (and text encoders) in fp32."""
    from kshd.lora import add_lora

    prediction_type(c, s)
    c.vae.requires_grad_(False)
    for encoder in c.text_encoders:
        encoder.requires_grad_(False)
        encoder.eval()
    add_lora(c.unet, s.rank, s.alpha, s.target_modules)
    if s.train_text_encoder:  # both of SDXL's, as kohya trains them
        for encoder in c.text_encoders:
            add_lora(encoder, s.rank, s.alpha, s.text_encoder_target_modules)
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


class RegWithBuckets(UserError, ValueError):
    """Aspect-ratio buckets with regularization drawings: not supported yet."""


def check_reg(s: TrainSettings, reg) -> None:
    """Buckets' batches per epoch would vary with the regularization drawings taken in turn."""
    if reg is not None and len(reg) and s.buckets:
        raise RegWithBuckets(
            "train.buckets=true with regularization drawings (data.reg_dir) is not supported: "
            "set train.buckets=false, or empty data.reg_dir"
        )


def build_dataset(
    c: Components,
    split,
    s: TrainSettings,
    keep_tag: str,
    cache_dir: Path | None,
    accelerator,
    reg=None,
) -> tuple[DrawingDataset, dict]:
    from kshd.prompts import CaptionChunker
    from kshd.training.latent_cache import LatentSource, TextSource, module_fingerprint

    opts = ItemOptions.of(s, keep_tag)

    tokenizers = c.tokenizers
    if not (s.cache_latents and cache_dir):
        log.info("inputs: VAE and text encoders run every step (train.cache_latents=false)")
        return DrawingDataset(split, tokenizers, opts, reg=reg, weight=s.prior_loss_weight), {}
    device = accelerator.device
    latents = LatentSource(
        c.vae, cache_dir / f"latents-{module_fingerprint(c.vae)}-{s.resolution}", device
    )
    texts = None
    if s.shuffle_tags or s.train_text_encoder:
        why = "train.shuffle_tags" if s.shuffle_tags else "train.train_text_encoder"
        log.info("inputs: captions encoded every step (%s=true changes them each step)", why)
    else:
        texts = TextSource(
            lambda ids: encode_caption_ids(c, ids),
            [CaptionChunker(t, s.max_token_length, keep_tag) for t in tokenizers],
            cache_dir / "-".join(["text", *(module_fingerprint(e) for e in c.text_encoders)]),
            device,
        )
    data = DrawingDataset(split, tokenizers, opts, latents, texts, reg, s.prior_loss_weight)
    with accelerator.main_process_first():
        stats = latents.precompute(data)
        if texts:
            texts.precompute(data.texts_list + ([""] if s.caption_dropout else []))
    return data, stats


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


def build_loader(data: DrawingDataset, s: TrainSettings, processes: int):
    """Shuffled by (seed, epoch) only; its own generator, so iterating never draws from torch's
    global RNG. With buckets every batch holds one bucket's size."""
    common = {
        "num_workers": s.dataloader_num_workers,
        "collate_fn": collate,
        "generator": torch.Generator().manual_seed(s.seed),
    }
    if s.buckets:
        sampler = BucketBatchSampler(data.targets, s.batch_size, s.seed, data.n_reg)
        loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, **common)
        return sampler, loader, math.ceil(len(sampler.batches()) / processes)
    sampler = EpochSampler(data.n_train, s.seed, data.n_reg)
    loader = torch.utils.data.DataLoader(data, batch_size=s.batch_size, sampler=sampler, **common)
    return sampler, loader, math.ceil(len(sampler) / s.batch_size / processes)


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
