"""The training run's parts before its loop: adapters on the frozen base, the dataset with its
caches, the optimizer and the loader (kept apart from the loop in `trainer`)."""

from __future__ import annotations

import gc
import logging
import math
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
    load_frozen,
    place_for_training,
)

log = logging.getLogger(__name__)


def freeze_and_adapt(c: Components, s: TrainSettings, device, dtype) -> list:
    """Frozen base in the compute dtype, LoRA adapters on the UNet (and text encoder) in fp32."""
    from kshd.lora import add_lora

    if s.prediction_type:
        c.noise_scheduler.register_to_config(prediction_type=s.prediction_type)
    c.vae.requires_grad_(False)
    c.text_encoder.requires_grad_(False)
    add_lora(c.unet, s.rank, s.alpha, s.target_modules)
    if s.train_text_encoder:
        add_lora(c.text_encoder, s.rank, s.alpha, s.text_encoder_target_modules)
        c.text_encoder.train()
    else:
        c.text_encoder.eval()
    modules = [c.unet, c.text_encoder] if s.train_text_encoder else [c.unet]
    place_for_training([c.vae, c.text_encoder, c.unet], modules, device, dtype)
    if s.gradient_checkpointing:
        c.unet.enable_gradient_checkpointing()
        if s.train_text_encoder:
            c.text_encoder.gradient_checkpointing_enable()
    return [p for m in modules for p in m.parameters() if p.requires_grad]


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
    dtype,
    reg=None,
) -> tuple[DrawingDataset, dict]:
    from kshd.prompts import CaptionChunker
    from kshd.training.latent_cache import LatentSource, TextSource, module_fingerprint

    opts = ItemOptions.of(s, keep_tag)

    if not (s.cache_latents and cache_dir):
        log.info("inputs: VAE and text encoder run every step (train.cache_latents=false)")
        return DrawingDataset(split, c.tokenizer, opts, reg=reg, weight=s.prior_loss_weight), {}
    device = accelerator.device
    latents = LatentSource(
        c.vae, cache_dir / f"latents-{module_fingerprint(c.vae)}-{s.resolution}", device, dtype
    )
    texts = None
    if not (s.shuffle_tags or s.train_text_encoder):
        texts = TextSource(
            c.text_encoder,
            CaptionChunker(c.tokenizer, s.max_token_length, keep_tag),
            cache_dir / f"text-{module_fingerprint(c.text_encoder)}",
            device,
        )
    data = DrawingDataset(split, c.tokenizer, opts, latents, texts, reg, s.prior_loss_weight)
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
    c.vae.to("meta")
    c.text_encoder.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("inputs: all cached; the VAE and the text encoder are released until validation")
    return True


def reload_frozen(c: Components, device, dtype: torch.dtype) -> tuple:
    """(text encoder, VAE) from c.source, frozen and placed as training placed them."""
    text_encoder, vae = load_frozen(*c.source)
    for module in (text_encoder, vae):
        module.requires_grad_(False).eval()
    place_for_training([text_encoder, vae], [], device, dtype)
    return text_encoder, vae
