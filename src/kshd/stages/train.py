"""DVC stage `train`: data/dataset -> models/lora (the adapter's diffusers + kohya safetensors,
metrics, loss; with `train.ema_decay`, the EMA's pair in models/lora/ema/).

Resumes from the newest checkpoint of the same run after a crash; `train.resume=false` (or
deleting models/checkpoints) starts afresh. Runs unchanged under `accelerate launch`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from kshd.adapters.base import Adapter
from kshd.adapters.files import (
    EMA_DIR,
    EMA_SUFFIX,
    KohyaInfo,
    remove_adapter_files,
    save_adapter,
    save_adapter_state,
)
from kshd.adapters.registry import build_adapter
from kshd.config.compose import shared_path
from kshd.config.fill import as_plain
from kshd.config.schema import ProjectConfig
from kshd.config.schema_train import TrainSettings
from kshd.evaluation.sampling import grid, validation_images
from kshd.experiments.tracking import start_run
from kshd.fileio import write_json, write_text
from kshd.models.family import is_single_file
from kshd.models.identity import file_sha256, model_identity
from kshd.stages import entry, require_model, resolve_models, stage_config
from kshd.training.checkpoints import fingerprint
from kshd.training.components import load_components
from kshd.training.inputs import check_reg
from kshd.training.interrupts import Interrupted
from kshd.training.loop import CheckpointPolicy, train_lora
from kshd.training.optimizers import optimizer_kind
from kshd.training.processes import device_record, process_state
from kshd.training.result import TrainResult

log = logging.getLogger(__name__)


def loss_csv(result: TrainResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["step", "epoch", "loss", "lr", "images_per_s"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(result.history)
    return buf.getvalue()


def validator(validation_dir: str, s: TrainSettings, run):
    """Sample the validation prompt every `train.validation_epochs` and after the last epoch."""
    out = Path(validation_dir)
    out.mkdir(parents=True, exist_ok=True)  # a DVC output, even when nothing is sampled
    if not (s.validation_epochs and s.validation_prompt):
        return None

    def validate(epoch: int, components) -> None:
        images = validation_images(
            components,
            s.validation_prompt,
            s.validation_negative_prompt,
            s.validation_seeds,
            s.validation_steps,
            s.resolution,
            positive_prefix=s.validation_positive_prefix,
            negative_prefix=s.validation_negative_prefix,
            sampler=s.validation_sampler,
        )
        grid([images]).save(out / f"epoch-{epoch:04d}.png")
        if run:
            import wandb

            run.log(
                {
                    "train/validation": [
                        wandb.Image(i, caption=f"epoch {epoch}, seed {seed}")
                        for i, seed in zip(images, s.validation_seeds, strict=True)
                    ]
                }
            )

    return validate


def write_outputs(
    cfg: ProjectConfig,
    s: TrainSettings,
    components,
    result: TrainResult,
    num_images: int,
    num_reg_images: int = 0,
) -> dict:
    out = Path(cfg.output.lora_dir)
    info = KohyaInfo(
        **_base_model(cfg.model.pretrained),
        resolution=s.resolution,
        trigger=cfg.caption.trigger_phrase,
        steps=result.steps,
        epochs=result.epochs,
        batch_size=s.batch_size,
        learning_rate=optimizer_kind(s.optimizer).learning_rate(s.learning_rate),
        num_images=num_images,
        num_reg_images=num_reg_images,
        seed=s.seed,
        train_text_encoder=s.train_text_encoder,
        sdxl=components.text_encoder_2 is not None,
        clip_skip=cfg.model.clip_skip,
    )
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    _, kohya = save_adapter(out, adapter, info, components.unet, components.text_encoder,
                            components.text_encoder_2)  # fmt: skip
    write_ema(out / EMA_DIR, adapter, info, result, getattr(components.unet, "config", None))
    metrics = result.metrics() | {
        "adapter_mb": round(kohya.stat().st_size / 1e6, 3),  # the file A1111 users share
        "reg_images": num_reg_images,
        "latents": result.latents,
        "captions": result.captions,
        "device": device_record(),  # which GPU a sweep's experiment ran on
    }
    reports = Path(cfg.output.train_reports_dir)
    write_json(reports / "metrics.json", metrics)
    write_text(reports / "loss.csv", loss_csv(result))
    return metrics


def write_ema(
    out: Path, adapter: Adapter, info: KohyaInfo, result: TrainResult, unet_config
) -> None:
    """The EMA's pair of files (`ss_ema_*` saying so), or none: an earlier run's EMA never
    stays beside another run's weights (DVC empties the adapter's folder before a run; a run
    by hand or from Python removes it here)."""
    if result.ema is None:
        if out.is_dir():
            remove_adapter_files(out, EMA_SUFFIX)
            if not any(out.iterdir()):
                out.rmdir()
        return
    r = result.ema.record
    fields = {"ss_ema_decay": str(r["decay"]), "ss_ema_every": str(r["every"]),
              "ss_ema_warmup": str(r["warmup"])}  # fmt: skip
    save_adapter_state(out, adapter, info, result.ema.tensors, unet_config, EMA_SUFFIX, fields)


def _base_model(pretrained: str) -> dict:
    """kohya's record of the base: a local file's name and sha256, else the id or folder."""
    if is_single_file(pretrained) and Path(pretrained).is_file():
        return {"base_model": Path(pretrained).name, "base_model_hash": file_sha256(pretrained)}
    return {"base_model": pretrained}


def start_tracking(cfg: ProjectConfig):
    """The stage's wandb run (None when tracking is off), the device in its config: added after
    the start, not in the config it starts with, whose hash names the run, so a killed run that
    is run again on another GPU resumes the same wandb run."""
    wb = start_run(cfg.tracking, "train", as_plain(cfg))
    if wb:
        wb.config.update({"device": device_record()}, allow_val_change=True)
    return wb


def checkpoint_policy(cfg: ProjectConfig, split, reg) -> CheckpointPolicy:
    """Where checkpoints go and which of them this run may continue: those of the same training
    settings, dataset (and regularization set) and base model."""
    s, m = cfg.train, cfg.model
    checkpoints = Path(cfg.output.checkpoints_dir)
    checkpoints.mkdir(parents=True, exist_ok=True)  # a DVC output, even for a run too short for one
    return CheckpointPolicy(
        checkpoints,
        s.checkpointing_steps,
        s.checkpoints_total_limit,
        s.resume,
        fingerprint(
            settings=s.defining(),
            dataset=split._fingerprint
            + (f"+reg:{reg._fingerprint}:{s.prior_loss_weight}" if reg else ""),
            model=model_identity(m.pretrained, m.revision) | m.encoding_identity(),
        ),
    )


def run(cfg: ProjectConfig) -> dict | None:
    """data/dataset -> models/lora; the metrics (None off the main process). Raises Interrupted
    on Ctrl-C or SIGTERM once a checkpoint is written."""
    from datasets import load_from_disk

    s = cfg.train
    state = process_state()
    optimizer_kind(s.optimizer).check_device(state.device)  # before any model loads
    resolve_models(cfg)
    require_model(cfg, "model.pretrained", "model_index.json")
    dataset = load_from_disk(cfg.data.dataset_dir)
    split, reg = dataset["train"], dataset.get("reg")
    check_reg(s, reg)
    # the UNet is loaded by the trainer once the caches are filled (see load_components)
    m = cfg.model
    components = load_components(
        m.pretrained, m.revision, m.variant, False, m.prediction_type, m.zero_terminal_snr,
        m.no_half_vae, m.single_file_config, m.clip_skip,
    )  # fmt: skip
    main_process = state.is_main_process
    wb = start_tracking(cfg) if main_process else None
    ckpt = checkpoint_policy(cfg, split, reg)
    on_log = (
        (lambda row: wb.log({f"train/{k}": v for k, v in row.items()}, step=row["step"]))
        if wb
        else None
    )
    try:
        result = train_lora(
            components,
            split,
            s,
            on_log,
            ckpt,
            shared_path(cfg.data.cache_dir),
            cfg.caption.trigger_phrase,
            validator(cfg.output.validation_dir, s, wb),
            give_back=False,  # only the LoRA is saved: no need to load the VAE again
            reg_split=reg,
        )
        if not main_process:
            return None
        metrics = write_outputs(cfg, s, components, result, len(split), len(reg or ()))
        log.info("train: %s -> %s", metrics, cfg.output.lora_dir)
        if wb:
            wb.summary.update({f"train/{k}": v for k, v in metrics.items()})
        return metrics
    finally:
        if wb:
            wb.finish()


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "train")
    try:
        run(cfg)
    except Interrupted as stop:
        log.error("train: %s", stop)
        raise SystemExit(130) from None  # the shell's code for Ctrl-C


if __name__ == "__main__":
    entry(main, "train")
