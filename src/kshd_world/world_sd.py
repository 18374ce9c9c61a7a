"""A tiny Stable Diffusion 1.x pretrained here on the demo world's *plain* style.

SD's recipe at a size two CPU cores train in minutes: an AutoencoderKL that downsamples by 8 (four
blocks, as SD's), trained on random crops of both styles' drawings (SD's VAE sees every style);
its latent scaling factor measured as 1 / the latents' standard deviation (SD 1.x's 0.18215 came
about the same way); then a UNet on the plain world's cached latents, conditioned on the frozen
text tower of the world's CLIP (kshd_world.world_clip), as SD 1.x on OpenAI's CLIP ViT-L's,
with SD 1.5's noise schedule, epsilon prediction and 10% empty captions for classifier-free
guidance, weights averaged (EMA) as SD's released ones. (Trained jointly from scratch, a text
encoder gave a UNet that ignored the prompt after 1,800 steps: measured when the world was built.)

The base so made draws plain-style characters that follow the prompt's attributes, so a LoRA
trained on the KSH samples has a style to change: what the learning tests measure.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kshd_world.sd_folder import SD15_DDPM
from kshd_world.world import character, draw

log = logging.getLogger(__name__)

RESOLUTION = 128  # the demo's size: 16x16 latents, room for a face
VAE_CONFIG = dict(
    block_out_channels=[8, 16, 32, 32],
    layers_per_block=1,
    norm_num_groups=4,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    sample_size=RESOLUTION,
)
UNET_CONFIG = dict(
    sample_size=RESOLUTION // 8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 96),
    layers_per_block=1,
    # attention at every level, as SD's at 64, 32 and 16 latents: a LoRA on it reaches the lines
    down_block_types=("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=24,  # the world CLIP's text width
    attention_head_dim=2,  # heads (diffusers' name); 8 cost 1.75x the step time on a CPU
    norm_num_groups=16,
)
# Character seeds of the pretraining data: far from the samples' (5508+), the judges' tuning
# (0-199) and held-out (10_000+) seeds, and from world_clip's.
VAE_SEEDS = 30_000
UNET_SEEDS = 40_000


@dataclass
class Curve:
    """A loss curve: a running mean recorded every `every` steps, for the manifest."""

    every: int
    points: list[list[float]] = field(default_factory=list)
    _mean: float | None = None

    def add(self, step: int, loss: float) -> None:
        self._mean = loss if self._mean is None else 0.98 * self._mean + 0.02 * loss
        if step % self.every == 0:
            self.points.append([step, round(self._mean, 5)])


def _lr(base: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine down to a tenth: a short run ends on small steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    done = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))


def world_pixels(seeds: Sequence[int], style: str) -> torch.Tensor:
    """The characters of `seeds` drawn in `style` at RESOLUTION, as SD's pixels in [-1, 1]."""
    arr = np.stack(
        [
            np.asarray(draw(character(s), style, (RESOLUTION, RESOLUTION)).convert("RGB"))
            for s in seeds
        ]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(seed: int, steps: int, n: int, batch: int, crop: int, lr: float):
    """The VAE on `crop`-px crops (8-aligned, a quarter of the pixels or less: its convolutions
    are local, as SD's VAE was trained on 256-px crops) of n characters in both styles."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    seeds = range(VAE_SEEDS, VAE_SEEDS + n)
    x = torch.cat([world_pixels(seeds, "plain"), world_pixels(seeds, "ksh")])
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    curve, start = Curve(every=25), time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(lr, step, steps, warmup=50)
        idx = torch.randint(0, len(x), (batch,), generator=g)
        oy, ox = (
            8 * int(v) for v in torch.randint(0, (RESOLUTION - crop) // 8 + 1, (2,), generator=g)
        )
        target = x[idx, :, oy : oy + crop, ox : ox + crop]
        posterior = vae.encode(target).latent_dist
        rec = vae.decode(posterior.sample(generator=g)).sample
        err = rec - target
        loss = err.abs().mean() + 0.5 * err.pow(2).mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.add(step, loss.item())
        if step % 200 == 0:
            log.info(
                "vae step %d/%d loss %.4f (%.0f s)",
                step,
                steps,
                loss.item(),
                time.perf_counter() - start,
            )
    return vae.eval().requires_grad_(False), curve


@torch.no_grad()
def encode_plain_world(vae, n: int) -> tuple[torch.Tensor, list[str]]:
    """The plain world's latents (the posterior's mean, unscaled) and captions for the UNet."""
    latents, captions = [], []
    for s0 in range(UNET_SEEDS, UNET_SEEDS + n, 100):
        seeds = range(s0, min(s0 + 100, UNET_SEEDS + n))
        latents.append(vae.encode(world_pixels(seeds, "plain")).latent_dist.mode())
        captions += [character(s).caption() for s in seeds]
    return torch.cat(latents), captions


def _ema_update(
    ema: Sequence[torch.nn.Parameter], live: Sequence[torch.nn.Parameter], step: int
) -> None:
    decay = min(0.999, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema, live, strict=True):
            e.lerp_(p, 1 - decay)


def clip_text_encoder(clip_dir):
    """The text tower of the world's CLIP as SD's text encoder (a CLIPTextModel), frozen, fp32."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32)
    return clip.text_model.eval().requires_grad_(False)  # a CLIPTextModel in transformers 5


@torch.no_grad()
def _embed(text, tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each distinct caption's hidden states (77 tokens, as SD pads) and the index of each."""
    distinct = sorted(set(captions))
    where = {c: i for i, c in enumerate(distinct)}
    states = []
    for i in range(0, len(distinct), 256):
        ids = tokenizer(
            distinct[i : i + 256],
            padding="max_length",
            max_length=77,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        states.append(text(ids)[0])
    return torch.cat(states), torch.tensor([where[c] for c in captions])


def train_unet(
    latents: torch.Tensor,
    captions: list[str],
    text,
    tokenizer,
    seed: int,
    steps: int,
    batch: int,
    lr: float,
):
    """The UNet on scaled latents and the frozen text encoder's states (computed once):
    epsilon prediction, SD 1.5's noise schedule, 10% empty captions; its EMA copy and curve."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    states, index = _embed(text, tokenizer, captions)
    empty, _ = _embed(text, tokenizer, [""])
    scheduler = DDPMScheduler(**SD15_DDPM)
    live = list(unet.parameters())
    ema_unet = copy.deepcopy(unet)
    ema = list(ema_unet.parameters())
    opt = torch.optim.AdamW(live, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    curve, start = Curve(every=25), time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(lr, step, steps, warmup=100)
        idx = torch.randint(0, len(latents), (batch,), generator=g)
        cond = states[index[idx]].clone()
        cond[torch.rand(batch, generator=g) < 0.1] = empty[0]
        noise = torch.randn(latents[idx].shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        pred = unet(scheduler.add_noise(latents[idx], noise, t), t, cond).sample
        loss = (pred - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(live, 1.0)
        opt.step()
        _ema_update(ema, live, step)
        curve.add(step, loss.item())
        if step % 200 == 0:
            log.info(
                "unet step %d/%d loss %.4f (%.0f s)",
                step,
                steps,
                loss.item(),
                time.perf_counter() - start,
            )
    return ema_unet.eval().requires_grad_(False), curve
