"""The training inputs: the dataset with its latent and text caches, and the loader that batches
it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from kshd.config.errors import UserError
from kshd.config.schema_train import TrainSettings
from kshd.training.batches import (
    BucketBatchSampler,
    DrawingDataset,
    ItemOptions,
    collate,
)
from kshd.training.components import Components, encode_caption_ids
from kshd.training.samplers import EpochSampler

log = logging.getLogger(__name__)


class RegWithBuckets(UserError, ValueError):
    """Aspect-ratio buckets with regularization drawings: not supported yet."""


def check_reg(s: TrainSettings, reg) -> None:
    """Buckets' batches per epoch would vary with the regularization drawings taken in turn."""
    if reg is not None and len(reg) and s.buckets:
        raise RegWithBuckets(
            "train.buckets=true with regularization drawings (data.reg_dir) is not supported: "
            "set train.buckets=false, or empty data.reg_dir"
        )


def _log_masks(data: DrawingDataset) -> DrawingDataset:
    """How many drawings the masked loss weighs by their alpha; none is worth a warning."""
    n = sum(data.has_alpha)
    if data.mask_factor and n:
        log.info("inputs: %d of %d drawings weighted by their alpha (masked loss)", n, len(data))
    elif data.mask_factor:
        log.warning(
            "train.masked_loss=true, but no drawing has transparency: every drawing trains "
            "unmasked (prepare keeps the alpha of transparent PNG/WebP drawings)"
        )
    return data


def build_dataset(
    c: Components,
    split,
    s: TrainSettings,
    keep_tag: str,
    cache_dir: Path | None,
    accelerator,
    reg=None,
) -> tuple[DrawingDataset, dict]:
    from kshd.prompts.encoding import CaptionChunker
    from kshd.training.latent_cache import LatentSource, TextSource, module_fingerprint

    opts = ItemOptions.from_settings(s, keep_tag)
    factor = mask_factor(c.vae) if s.masked_loss else None
    weights = {"reg": reg, "weight": s.prior_loss_weight, "mask_factor": factor}

    tokenizers = c.tokenizers
    if not (s.cache_latents and cache_dir):
        log.info("inputs: VAE and text encoders run every step (train.cache_latents=false)")
        return _log_masks(DrawingDataset(split, tokenizers, opts, **weights)), {}
    device = accelerator.device
    latents = LatentSource(
        c.vae, cache_dir / f"latents-{module_fingerprint(c.vae)}-{s.resolution}", device, factor
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
            c.clip_skip,
        )
    data = _log_masks(DrawingDataset(split, tokenizers, opts, latents, texts, **weights))
    with accelerator.main_process_first():
        stats = latents.precompute(data)
        if texts:
            texts.precompute(data.texts_list + ([""] if s.caption_dropout else []))
    return data, stats


def mask_factor(vae) -> int:
    """How many pixels a latent spans per side (8 for SD's VAE), as diffusers' pipelines say."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


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
