"""DVC stage `train`: data/dataset -> models/lora (diffusers + kohya safetensors, metrics, loss)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from kshd.fileio import write_json, write_text
from kshd.lora import kohya_metadata, lora_state_dict, save_diffusers, save_kohya
from kshd.models import check_model_source
from kshd.stages import ensure_tiny, plain, stage_config
from kshd.tracking import TrackingSettings, start_run
from kshd.training import TrainResult, TrainSettings, load_components, train_lora

log = logging.getLogger(__name__)


def loss_csv(result: TrainResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["step", "epoch", "loss", "lr", "images_per_s"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(result.history)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    from datasets import load_from_disk

    cfg = stage_config(argv, "train")
    settings = TrainSettings.from_config(cfg.train)
    ensure_tiny(cfg)
    check_model_source(cfg.model.pretrained, "model.pretrained")
    train_split = load_from_disk(cfg.data.dataset_dir)["train"]
    components = load_components(cfg.model.pretrained, cfg.model.revision, cfg.model.variant)
    run = start_run(
        TrackingSettings.from_config(cfg.tracking),
        "train",
        {k: plain(cfg)[k] for k in ("train", "model", "data", "caption", "dataset")},
    )
    on_log = (
        (lambda row: run.log({f"train/{k}": v for k, v in row.items()}, step=row["step"]))
        if run
        else None
    )
    try:
        result = train_lora(components, train_split, settings, on_log)
        out = Path(cfg.output.lora_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = lora_state_dict(components.unet)
        save_diffusers(state, out)
        save_kohya(
            state,
            out,
            settings.alpha,
            kohya_metadata(
                rank=settings.rank,
                alpha=settings.alpha,
                base_model=cfg.model.pretrained,
                resolution=settings.resolution,
                trigger=cfg.caption.trigger_phrase,
                steps=result.steps,
                epochs=result.epochs,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                num_images=len(train_split),
                seed=settings.seed,
            ),
        )
        metrics = result.metrics()
        write_json(out / "metrics.json", metrics)
        write_text(out / "loss.csv", loss_csv(result))
        if run:
            run.summary.update({f"train/{k}": v for k, v in metrics.items()})
        log.info("train: %s -> %s", metrics, out)
    finally:
        if run:
            run.finish()


if __name__ == "__main__":
    main()
