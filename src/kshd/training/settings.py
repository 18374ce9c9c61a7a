"""LoRA training of an SD 1.x UNet: the loop of diffusers' train_text_to_image_lora.py."""

from __future__ import annotations

import logging
import math
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kshd.prompts import encode_chunk_ids
from kshd.schema_train import TrainSettings
from kshd.training.checkpoints import Progress

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    progress: Progress = field(default_factory=Progress)
    epochs: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    resumed_from: str | None = None
    latents: dict = field(default_factory=dict)
    captions: dict = field(default_factory=dict)  # captions cut at train.max_token_length
    latent_std: float | None = None  # the first trained batch's scaled latents: about 1 if right

    @property
    def steps(self) -> int:
        return self.progress.step

    @property
    def history(self) -> list[dict]:
        return self.progress.history

    def metrics(self) -> dict:
        h = self.history
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "final_loss": h[-1]["loss"] if h else None,
            "mean_loss_last_epoch": _mean_last_epoch(h),
            "images_per_s": round(h[-1]["images_per_s"], 4) if h else None,
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "resumed_from": self.resumed_from,
            "latent_std": None if self.latent_std is None else round(self.latent_std, 4),
        }


def _mean_last_epoch(history: list[dict]) -> float | None:
    if not history:
        return None
    last = [h["loss"] for h in history if h["epoch"] == history[-1]["epoch"]]
    return sum(last) / len(last)


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


@dataclass
class Components:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object
    # (pretrained, revision, variant): where a released VAE and text encoder are reloaded from
    source: tuple[str, str | None, str | None] | None = None


def load_components(
    pretrained: str, revision: str | None = None, variant: str | None = None, unet: bool = True
) -> Components:
    """The five SD parts through from_pretrained, as the reference script loads them.

    unet=False leaves the UNet to the trainer, which loads it once the caches are filled and
    the VAE and text encoder are released, so the three are never in memory together."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    kw = {"revision": revision}
    text_encoder, vae = load_frozen(pretrained, revision, variant)
    return Components(
        tokenizer=CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **kw),
        text_encoder=text_encoder,
        vae=vae,
        unet=load_unet(pretrained, revision, variant) if unet else None,
        noise_scheduler=DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler", **kw),
        source=(pretrained, revision, variant),
    )


def load_unet(pretrained: str, revision: str | None, variant: str | None):
    """The UNet alone (safetensors only: never unpickle a downloaded file)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(
        pretrained, subfolder="unet", revision=revision, variant=variant, use_safetensors=True
    )


def load_frozen(pretrained: str, revision: str | None, variant: str | None) -> tuple:
    """(text encoder, VAE): loaded with the rest, and again for validation once released."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    kw = {"revision": revision, "variant": variant, "use_safetensors": True}
    return (
        CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", **kw),
        AutoencoderKL.from_pretrained(pretrained, subfolder="vae", **kw),
    )


COMPUTE_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen base runs in for `train.mixed_precision`."""
    return COMPUTE_DTYPES[mixed_precision]


def place_for_training(
    modules: list[torch.nn.Module], trainable: list[torch.nn.Module], device, dtype: torch.dtype
) -> None:
    """Frozen weights in the compute dtype, trainable (LoRA) weights in fp32, as diffusers'
    train_text_to_image_lora.py does: the whole pipeline shares one dtype, so validation's VAE
    decode sees the UNet's dtype, while small LoRA updates do not vanish in half precision."""
    from diffusers.training_utils import cast_training_params

    cast = {} if dtype == torch.float32 else {"dtype": dtype}  # the VAE warns on a no-op cast
    for module in modules:
        if next(module.parameters()).device.type != "meta":  # a released module stays so
            module.to(device, **cast)
    if cast:
        cast_training_params(trainable, dtype=torch.float32)


def batch_inputs(c: Components, batch: dict, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, encoder hidden states): sampled from the cached distribution or encoded live.

    Both paths draw the latent sample from the global RNG exactly as AutoencoderKL's
    `latent_dist.sample()` does, so cached and live training see the same noise.
    """
    if "latent_mean" in batch:
        from diffusers.utils.torch_utils import randn_tensor

        mean = batch["latent_mean"].to(device, dtype)
        std = torch.exp(0.5 * batch["latent_logvar"].to(device, dtype))
        latents = mean + std * randn_tensor(mean.shape, device=device, dtype=dtype)
    else:
        with torch.no_grad():
            latents = c.vae.encode(batch["pixel_values"].to(device, dtype)).latent_dist.sample()
    # Contiguous: the VAE returns channels-last strides, and randn_like (the noise) follows
    # strides, so without this the same RNG draws would land in other places per path.
    latents = (latents * c.vae.config.scaling_factor).contiguous()
    if "encoder_hidden_states" in batch:
        return latents, batch["encoder_hidden_states"].to(device, dtype)
    ids = batch["input_ids"].to(device)  # [batch, chunks, 77]: see prompts.CaptionChunker
    if c.text_encoder.training:  # text-encoder LoRA: gradients flow
        return latents, encode_chunk_ids(c.text_encoder, ids)
    with torch.no_grad():
        return latents, encode_chunk_ids(c.text_encoder, ids)


def diffusion_loss(
    c: Components,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    unet,
    s: TrainSettings,
    item_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One denoising step's loss: noise (+ offset), timesteps, target, optional min-SNR weights;
    `item_weights` per drawing (train.prior_loss_weight for the regularization drawings)."""
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
    pred = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
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


def peak_rss_mb() -> float:
    """This process's own peak resident memory (MB). Linux's VmHWM, not getrusage's ru_maxrss:
    ru_maxrss keeps the parent's resident size at fork across exec, so a stage started by a
    large process would report the parent's memory as its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def total_steps(s: TrainSettings, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps, epochs): max_train_steps wins over epochs, as in the reference script."""
    per_epoch = math.ceil(batches_per_epoch / s.gradient_accumulation_steps)
    if s.max_train_steps:
        return s.max_train_steps, math.ceil(s.max_train_steps / per_epoch)
    return per_epoch * s.epochs, s.epochs


LogFn = Callable[[dict], None]
