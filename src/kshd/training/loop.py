"""The training loop: accelerate, cached inputs, exact resume, validation and a NaN guard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from kshd.adapters.base import Adapter
from kshd.adapters.registry import build_adapter
from kshd.config.errors import UserError
from kshd.config.schema_train import TrainSettings
from kshd.training.batches import DrawingDataset
from kshd.training.checkpoints import (
    Progress,
    load_checkpoint,
    restore_scaler,
    save_checkpoint,
    starting_checkpoint,
)
from kshd.training.compiled import compile_unet, original
from kshd.training.components import (
    Components,
    batch_inputs,
    compute_dtype,
    load_unet,
    place_for_training,
)
from kshd.training.ema import AdapterEma
from kshd.training.freeze import freeze_and_adapt, release_frozen, reload_frozen, vae_fp32
from kshd.training.inputs import build_dataset, build_loader, check_reg
from kshd.training.interrupts import Interrupted, deferred_interrupt
from kshd.training.loss import diffusion_loss
from kshd.training.optimizers import OptimizerKind, optimizer_kind
from kshd.training.processes import use_cpu_processes
from kshd.training.result import LogFn, TrainResult, peak_rss_mb, total_steps
from kshd.training.samplers import EpochSampler

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError, FloatingPointError):
    """Training produced NaN or inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class CheckpointPolicy:
    root: Path
    every: int
    limit: int | None
    resume: bool
    fingerprint: str


@dataclass
class _Run:
    accelerator: object
    unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    data: DrawingDataset
    params: list
    dtype: torch.dtype
    max_steps: int
    epochs: int
    batches_per_epoch: int
    adapter: Adapter  # train.adapter's kind: injected, checkpointed, restored
    optim: OptimizerKind  # train.optimizer's kind: its modes around sampling and saving
    released: bool = False  # the VAE and text encoder left memory (all inputs cached)
    latent_std: float | None = None  # of the first batch's scaled latents (see TrainResult)
    ema: AdapterEma | None = None  # train.ema_decay's moving average of the adapter's weights


ValidateFn = Callable[[int, Components], None]


def _ddp_options(c: Components, s: TrainSettings) -> list:
    """With clip skip 2 a text-encoder adapter's last layer gets no gradient (its output is
    skipped, as in kohya's runs): DDP across processes must be told, or its second step fails."""
    from accelerate.utils import DistributedDataParallelKwargs

    skips_a_layer = s.train_text_encoder and c.clip_skip != 1 and c.text_encoder_2 is None
    return [DistributedDataParallelKwargs(find_unused_parameters=True)] if skips_a_layer else []


def _setup(
    c: Components, split, s: TrainSettings, keep_tag: str, cache_dir: Path | None, reg=None
) -> tuple[_Run, dict]:
    """Everything the loop needs, in the reference script's order, prepared by accelerate."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_reg(s, reg)
    optim = optimizer_kind(s.optimizer)
    acc = Accelerator(
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        mixed_precision=s.mixed_precision,
        cpu=use_cpu_processes(),
        kwargs_handlers=_ddp_options(c, s),
    )
    if s.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    optim.check_device(acc.device)  # before any work
    set_seed(s.seed)
    dtype = compute_dtype(s.mixed_precision)
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    if c.unet is None:  # deferred: fill the caches and release first (same RNG draws)
        place_for_training([c.vae, *c.text_encoders], [], acc.device, dtype, vae_fp32(c))
        data, stats = build_dataset(c, split, s, keep_tag, cache_dir, acc, reg)
        released = release_frozen(c, data, stats, s)
        c.unet = load_unet(*c.source)
        params = freeze_and_adapt(c, s, adapter, acc.device, dtype)
    else:
        params = freeze_and_adapt(c, s, adapter, acc.device, dtype)
        data, stats = build_dataset(c, split, s, keep_tag, cache_dir, acc, reg)
        released = release_frozen(c, data, stats, s)
    sampler, loader, batches_per_epoch = build_loader(data, s, acc.num_processes)
    max_steps, epochs = total_steps(s, batches_per_epoch)
    optimizer, lr_scheduler = _optimizer(optim, params, s, max_steps, acc.num_processes)
    unet, optimizer, loader, lr_scheduler = acc.prepare(c.unet, optimizer, loader, lr_scheduler)
    if s.compile:
        unet = compile_unet(unet, s.compile_mode, s.compile_backend, acc)
    if s.train_text_encoder:
        c.text_encoder = acc.prepare(c.text_encoder)
        if c.text_encoder_2 is not None:
            c.text_encoder_2 = acc.prepare(c.text_encoder_2)
    return _Run(
        acc,
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
        batches_per_epoch,
        adapter,
        optim,
        released,
        ema=AdapterEma(params, s.ema_decay, s.ema_every, s.ema_warmup) if s.ema_on else None,
    ), stats


def _optimizer(optim: OptimizerKind, params: list, s: TrainSettings, max_steps: int, procs: int):
    """The kind's optimizer over the adapter's parameters, at the kind's rate, and the lr
    schedule the kind trains under (diffusers' get_scheduler, counted over all processes)."""
    from diffusers.optimization import get_scheduler

    optimizer = optim.build(params, optim.learning_rate(s.learning_rate))
    schedule, warmup = optim.schedule(s.lr_scheduler, s.lr_warmup_steps)
    return optimizer, get_scheduler(
        schedule,
        optimizer=optimizer,
        num_warmup_steps=warmup * procs,
        num_training_steps=max_steps * procs,
    )


def _parts(run: _Run, c: Components) -> tuple:
    """The UNet and text encoders as trained (unwrapped from accelerate and torch.compile)."""
    acc = run.accelerator
    second = original(c.text_encoder_2, acc) if c.text_encoder_2 is not None else None
    return original(run.unet, acc), original(c.text_encoder, acc), second


def _restore(run: _Run, c: Components, path: Path) -> TrainResult:
    loaded = load_checkpoint(path)  # also restores every RNG
    run.adapter.load_tensors(loaded.lora, *_parts(run, c))
    run.optimizer.load_state_dict(loaded.optimizer_state)
    run.lr_scheduler.load_state_dict(loaded.scheduler_state)
    restore_scaler(run.accelerator.scaler, loaded.scaler_state)
    if run.ema is not None:  # the fingerprint holds the EMA's settings: its checkpoints keep it
        run.ema.load_adapter_tensors(run.adapter, loaded.ema.tensors, *_parts(run, c))
    log.info(
        "resuming from %s (step %d, epoch %d)",
        path.name,
        loaded.progress.step,
        loaded.progress.epoch,
    )
    return TrainResult(progress=loaded.progress, resumed_from=path.name)


def _start(run: _Run, c: Components, ckpt: CheckpointPolicy | None) -> TrainResult:
    if ckpt is None:
        return TrainResult()
    path = starting_checkpoint(ckpt.root, ckpt.fingerprint, ckpt.resume, run.accelerator)
    return _restore(run, c, path) if path else TrainResult()


def _checked_latent_std(latents: torch.Tensor, scaling_factor: float) -> float:
    """The std of the latents the UNet trains on. The VAE's scaling factor exists to make it about
    1 (SD's 0.18215 was measured so); far from 1, the factor is wrong or was not applied, and the
    LoRA learns at the wrong noise level. Warned once, recorded in metrics.json."""
    std = latents.float().std().item()
    if not 0.5 <= std <= 2.0:
        log.warning(
            "training latents have std %.2f (expected about 1): check the VAE's scaling_factor "
            "(%s) for this base model",
            std,
            scaling_factor,
        )
    return std


def _micro_step(run: _Run, c: Components, batch: dict, s: TrainSettings, step: int) -> float:
    """Forward, NaN guard, backward, and (at accumulation boundaries) the optimizer step."""
    acc = run.accelerator
    run.optim.train(run.optimizer)  # the weights the gradient is taken at
    with acc.accumulate(run.unet):
        inputs = batch_inputs(c, run.data.encode_live(batch), acc.device, run.dtype)
        latents, hidden, added = inputs
        if run.latent_std is None:
            run.latent_std = _checked_latent_std(latents, c.vae.config.scaling_factor)
        weights, mask = batch.get("loss_weight"), batch.get("mask")  # mask: train.masked_loss
        loss = diffusion_loss(c, latents, hidden, run.unet, s, weights, added, mask)
        if not torch.isfinite(loss).all():
            names = [run.data.names[int(i)] for i in batch["index"]]
            raise NonFiniteLoss(
                f"non-finite loss ({loss.item()}) at step {step}; images in the "
                f"batch: {', '.join(names)}. The last good checkpoint is kept."
            )
        acc.backward(loss)
        if acc.sync_gradients and s.max_grad_norm:
            acc.clip_grad_norm_(run.params, s.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad()
    return acc.gather(loss.detach()).mean().item()


def train_lora(
    c: Components,
    train_split,
    s: TrainSettings,
    on_log: LogFn | None = None,
    ckpt: CheckpointPolicy | None = None,
    cache_dir: Path | None = None,
    keep_tag: str = "",
    validate: ValidateFn | None = None,
    give_back: bool = True,
    reg_split=None,
) -> TrainResult:
    """Train the adapter of `train.adapter` in place (c.unet, and c.text_encoder if asked);
    resumable. `reg_split`:
    regularization drawings, as many per epoch as training drawings, weighted by
    train.prior_loss_weight.

    give_back=False leaves a released VAE and text encoder on `meta` (a caller that only saves
    the LoRA need not load them again)."""
    run, stats = _setup(c, train_split, s, keep_tag, cache_dir, reg_split)
    acc = run.accelerator
    result = _start(run, c, ckpt)
    result.epochs, result.latents, p = run.epochs, stats, result.progress
    result.captions = run.data.caption_report()
    bar = tqdm(
        total=run.max_steps,
        initial=p.step,
        desc="train",
        unit="step",
        disable=not acc.is_local_main_process,
    )
    start = time.perf_counter()
    with deferred_interrupt() as stop:
        _loop(run, c, s, p, bar, on_log, ckpt, validate, stop)
    bar.close()
    run.optim.eval(run.optimizer)  # the weights that are saved
    result.seconds, result.peak_rss_mb = time.perf_counter() - start, peak_rss_mb()
    result.latent_std = run.latent_std
    result.ema = run.ema.weights(run.adapter, *_parts(run, c)) if run.ema is not None else None
    c.unet, c.text_encoder, c.text_encoder_2 = _parts(run, c)
    if run.released and give_back:  # the caller gets complete components back
        fresh = reload_frozen(c, acc.device, run.dtype)
        c.text_encoder, c.text_encoder_2, c.vae = (
            fresh.text_encoder,
            fresh.text_encoder_2,
            fresh.vae,
        )
    acc.wait_for_everyone()
    return result


def _loop(
    run: _Run,
    c: Components,
    s: TrainSettings,
    p: Progress,
    bar: tqdm,
    on_log: LogFn | None,
    ckpt: CheckpointPolicy | None,
    validate: ValidateFn | None,
    stop: dict,
) -> None:
    """Epochs and steps from `p` on; stops after a step when `stop` is set (Ctrl-C)."""
    acc = run.accelerator
    start, images_before, loss_sum = time.perf_counter(), p.images, 0.0
    while p.epoch < run.epochs and p.step < run.max_steps:
        run.loader.set_epoch(p.epoch)  # accelerate passes it on to the sampler
        run.data.set_epoch(p.epoch)
        consumed = p.batch_in_epoch * acc.num_processes  # batches, all processes together
        run.sampler.skip_once(consumed if s.buckets else consumed * s.batch_size)
        run.unet.train()
        for batch in run.loader:
            loss_sum += _micro_step(run, c, batch, s, p.step + 1) / s.gradient_accumulation_steps
            p.images += batch["index"].shape[0] * acc.num_processes
            p.batch_in_epoch += 1
            if not acc.sync_gradients:
                continue
            rate = (p.images - images_before) / max(time.perf_counter() - start, 1e-9)
            row = _record(p, run, loss_sum, rate, bar)
            if run.ema is not None:
                run.ema.step(p.step)
            loss_sum = 0.0
            if on_log and acc.is_main_process:
                on_log(row | run.optim.report(run.optimizer))
            if ckpt and (p.step % ckpt.every == 0 or stop["set"]):
                _checkpoint(run, c, ckpt, p)
            if stop["set"]:
                bar.close()
                where = f"a checkpoint in {ckpt.root}" if ckpt else "no checkpointing configured"
                raise Interrupted(f"interrupted after step {p.step}: {where}; run again to resume")
            if p.step >= run.max_steps:
                break
        if p.batch_in_epoch >= run.batches_per_epoch:  # the epoch is complete
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
            if (
                validate
                and s.validation_epochs
                and (
                    p.epoch % s.validation_epochs == 0 or p.epoch == run.epochs  # and the last one
                )
            ):
                _validate(run, c, validate, p.epoch)


def _record(p, run: _Run, loss: float, images_per_s: float, bar) -> dict:
    """Count the optimizer step and keep its row (loss.csv, wandb, the progress bar)."""
    p.step += 1
    row = {
        "step": p.step,
        "epoch": p.epoch,
        "loss": loss,
        "lr": run.lr_scheduler.get_last_lr()[0],
        "images_per_s": images_per_s,
    }
    p.history.append(row)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{images_per_s:.2f}")
    return row


def _checkpoint(run: _Run, c: Components, ckpt: CheckpointPolicy, p) -> None:
    run.optim.eval(run.optimizer)  # every process: their weights stay the same
    if run.accelerator.is_main_process:
        save_checkpoint(
            ckpt.root,
            ckpt.fingerprint,
            p,
            run.adapter.tensors(*_parts(run, c)),
            run.optimizer.state_dict(),
            run.lr_scheduler.state_dict(),
            ckpt.limit,
            run.accelerator.scaler.state_dict() if run.accelerator.scaler else None,
            run.adapter.record(),
            run.ema.weights(run.adapter, *_parts(run, c)) if run.ema is not None else None,
        )
    run.accelerator.wait_for_everyone()


def _validate(run: _Run, c: Components, validate: ValidateFn, epoch: int) -> None:
    """Sample with the current adapter without disturbing training's RNG or modes."""
    run.optim.eval(run.optimizer)  # every process: their weights stay the same
    if not run.accelerator.is_main_process:
        return
    rng = torch.get_rng_state()
    unet = original(run.unet, run.accelerator)
    unet.eval()
    # the VAE and text encoders brought back for this validation only when released
    parts = reload_frozen(c, run.accelerator.device, run.dtype) if run.released else c
    try:  # under autocast as in diffusers' script: the prepared UNet returns fp32
        with run.accelerator.autocast():
            validate(epoch, replace(parts, unet=unet))
    finally:
        torch.set_rng_state(rng)
        unet.train()
