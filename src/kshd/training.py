"""LoRA training of an SD 1.x UNet: the loop of diffusers' train_text_to_image_lora.py."""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from tqdm import tqdm

from kshd.config import require

log = logging.getLogger(__name__)

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config group; defaults are the original project's run."""

    resolution: int = 512
    center_crop: bool = False
    random_flip: bool = True
    batch_size: int = 1
    epochs: int = 50
    max_train_steps: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    rank: int = 4
    alpha: float = 4
    target_modules: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
    mixed_precision: str = "no"
    checkpointing_steps: int = 10000
    seed: int = 5508
    dataloader_num_workers: int = 0
    validation_prompt: str = ""

    @classmethod
    def from_config(cls, cfg: Mapping) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(cfg).items() if k in known}
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, "a whole number >= 1")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "a whole number >= 1")
        require(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "train.resolution",
            self.resolution,
            "a multiple of 8 (512 for SD 1.x)",
        )
        require(
            self.lr_scheduler in SCHEDULERS,
            "train.lr_scheduler",
            self.lr_scheduler,
            f"one of {', '.join(SCHEDULERS)}",
        )
        require(
            self.mixed_precision in ("no", "fp16", "bf16"),
            "train.mixed_precision",
            self.mixed_precision,
            "no, fp16 or bf16",
        )
        require(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "> 0")
        require(self.rank >= 1, "train.rank", self.rank, "a whole number >= 1")
        require(
            self.gradient_accumulation_steps >= 1,
            "train.gradient_accumulation_steps",
            self.gradient_accumulation_steps,
            "a whole number >= 1",
        )


@dataclass
class TrainResult:
    steps: int = 0
    epochs: int = 0
    images: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # one row per optimizer step
    peak_rss_mb: float = 0.0

    def metrics(self) -> dict:
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "mean_loss_last_epoch": _mean_last_epoch(self.history),
            "images_per_s": round(self.images / self.seconds, 4) if self.seconds else None,
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def _mean_last_epoch(history: list[dict]) -> float | None:
    if not history:
        return None
    last = [h["loss"] for h in history if h["epoch"] == history[-1]["epoch"]]
    return sum(last) / len(last)


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch): resumable and the same on every process."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


@dataclass
class Components:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object


def load_components(
    pretrained: str, revision: str | None = None, variant: str | None = None
) -> Components:
    """The five SD parts through from_pretrained, as the reference script loads them."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"revision": revision}
    return Components(
        tokenizer=CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **kw),
        text_encoder=CLIPTextModel.from_pretrained(
            pretrained, subfolder="text_encoder", variant=variant, **kw
        ),
        vae=AutoencoderKL.from_pretrained(pretrained, subfolder="vae", variant=variant, **kw),
        unet=UNet2DConditionModel.from_pretrained(
            pretrained, subfolder="unet", variant=variant, **kw
        ),
        noise_scheduler=DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler", **kw),
    )


def diffusion_loss(
    c: Components, pixel_values: torch.Tensor, input_ids: torch.Tensor, weight_dtype: torch.dtype
) -> torch.Tensor:
    """One denoising step's MSE, with noise and timesteps from the global (seeded) RNG."""
    with torch.no_grad():
        latents = c.vae.encode(pixel_values.to(weight_dtype)).latent_dist.sample()
        latents = latents * c.vae.config.scaling_factor
        encoder_hidden_states = c.text_encoder(input_ids, return_dict=False)[0]
    noise = torch.randn_like(latents)
    steps = c.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()
    noisy = c.noise_scheduler.add_noise(latents, noise, timesteps)
    if c.noise_scheduler.config.prediction_type == "v_prediction":
        target = c.noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    pred = c.unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def total_steps(s: TrainSettings, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps, epochs): max_train_steps wins over epochs, as in the reference script."""
    per_epoch = math.ceil(batches_per_epoch / s.gradient_accumulation_steps)
    if s.max_train_steps:
        return s.max_train_steps, math.ceil(s.max_train_steps / per_epoch)
    return per_epoch * s.epochs, s.epochs


LogFn = Callable[[dict], None]


@dataclass
class _Run:
    """Everything the loop touches, prepared by accelerate."""

    accelerator: object
    unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    data: torch.utils.data.Dataset
    params: list
    weight_dtype: torch.dtype
    max_steps: int
    epochs: int


def _setup(c: Components, train_split, s: TrainSettings) -> _Run:
    """Freeze the base, add the adapter, build data, optimizer and schedule (reference order)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    from kshd.batches import DrawingDataset
    from kshd.lora import add_lora

    accelerator = Accelerator(
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        mixed_precision=s.mixed_precision,
    )
    set_seed(s.seed)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(s.mixed_precision, torch.float32)
    c.vae.requires_grad_(False)
    c.text_encoder.requires_grad_(False)
    add_lora(c.unet, s.rank, s.alpha, s.target_modules)
    for frozen in (c.vae, c.text_encoder):  # cast only when needed: the VAE warns otherwise
        frozen.to(accelerator.device, **({} if dtype == torch.float32 else {"dtype": dtype}))
    c.unet.to(accelerator.device)
    data = DrawingDataset(
        train_split, c.tokenizer, s.resolution, s.center_crop, s.random_flip, s.seed
    )
    sampler = EpochSampler(len(data), s.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=s.batch_size, sampler=sampler, num_workers=s.dataloader_num_workers
    )
    params = [p for p in c.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=s.learning_rate,
        betas=(s.adam_beta1, s.adam_beta2),
        weight_decay=s.adam_weight_decay,
        eps=s.adam_epsilon,
    )
    max_steps, epochs = total_steps(s, len(loader))
    n = accelerator.num_processes
    lr_scheduler = get_scheduler(
        s.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=s.lr_warmup_steps * n,
        num_training_steps=max_steps * n,
    )
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(
        c.unet, optimizer, loader, lr_scheduler
    )
    return _Run(
        accelerator,
        unet,
        optimizer,
        lr_scheduler,
        loader,
        sampler,
        data,
        params,
        dtype,
        max_steps,
        epochs,
    )


def train_lora(
    c: Components, train_split, s: TrainSettings, on_log: LogFn | None = None
) -> TrainResult:
    """Train a LoRA adapter on c.unet in place; returns the per-step history and timings."""
    run = _setup(c, train_split, s)
    acc = run.accelerator
    result = TrainResult(epochs=run.epochs)
    bar = tqdm(
        total=run.max_steps, desc="train", unit="step", disable=not acc.is_local_main_process
    )
    start = time.perf_counter()
    for epoch in range(run.epochs):
        run.sampler.set_epoch(epoch)
        run.data.set_epoch(epoch)
        run.unet.train()
        for batch in run.loader:
            with acc.accumulate(run.unet):
                loss = diffusion_loss(
                    c, batch["pixel_values"], batch["input_ids"], run.weight_dtype
                )
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(run.params, s.max_grad_norm)
                run.optimizer.step()
                run.lr_scheduler.step()
                run.optimizer.zero_grad()
            result.images += batch["pixel_values"].shape[0] * acc.num_processes
            if not acc.sync_gradients:
                continue
            result.steps += 1
            row = _step_row(
                result,
                epoch,
                acc.gather(loss.detach()).mean().item(),
                run.lr_scheduler.get_last_lr()[0],
                time.perf_counter() - start,
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.2f}"
            )
            if on_log and acc.is_main_process:
                on_log(row)
            if result.steps >= run.max_steps:
                break
    bar.close()
    result.seconds = time.perf_counter() - start
    result.peak_rss_mb = peak_rss_mb()
    c.unet = acc.unwrap_model(run.unet)
    acc.wait_for_everyone()
    return result


def _step_row(result: TrainResult, epoch: int, loss: float, lr: float, elapsed: float) -> dict:
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss} at step {result.steps} (epoch {epoch})")
    row = {
        "step": result.steps,
        "epoch": epoch,
        "loss": loss,
        "lr": lr,
        "images_per_s": result.images / max(elapsed, 1e-9),
    }
    result.history.append(row)
    return row
