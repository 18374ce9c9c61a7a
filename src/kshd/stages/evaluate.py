"""DVC stage `evaluate`: models/lora -> reports/ (grids, metrics.json)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from kshd.adapters.weights import open_weights
from kshd.config.compose import shared_path, value_at
from kshd.config.fill import as_plain
from kshd.config.schema import ProjectConfig
from kshd.config.schema_model import ModelSettings
from kshd.data.images import IntakeRules
from kshd.evaluation.evaluate import (
    EMA,
    HEADLINE,
    CheckpointCurve,
    References,
    base_cache_folder,
    evaluate,
    grid_row_labels,
    select_checkpoints,
)
from kshd.evaluation.metrics import ClipEncoder, DinoEncoder, LazyImages
from kshd.evaluation.references import FolderImages, folder_references, is_dataset
from kshd.evaluation.report import SKETCH_CAPTION, render
from kshd.evaluation.sampling import SampleSettings
from kshd.evaluation.sketch import sketch_section
from kshd.experiments.tracking import start_run
from kshd.fileio import write_json, write_text
from kshd.models.family import model_family
from kshd.models.identity import embeddings_identity, model_identity
from kshd.models.loading import device_and_dtype, load_embeddings, load_sd_pipeline
from kshd.prompts.encoding import PromptEncoder
from kshd.prompts.sdxl import clip_skip_note
from kshd.prompts.sdxl import prompt_encoder as family_encoder
from kshd.stages import entry, require_model, resolve_models, stage_config
from kshd.training.checkpoints import complete_checkpoints

log = logging.getLogger(__name__)


def final_step(train_reports: Path) -> int | None:
    """The training step of the final LoRA, from the train stage's metrics."""
    path = train_reports / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")).get("steps") if path.exists() else None


def curve_csv(rows: list[dict]) -> str:
    """Metrics per checkpoint (a DVC plot: metric against step); the EMA's as `ema_` columns
    where the training kept one."""
    buf = io.StringIO()
    ema = [f"{EMA}{k}" for k in HEADLINE if any(f"{EMA}{k}" in r for r in rows)]
    writer = csv.DictWriter(
        buf, fieldnames=["step", *HEADLINE, *ema], lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def dataset_images(dataset_dir: str) -> tuple[LazyImages, LazyImages]:
    """(holdout, train) drawings: the style references and the memorization check, decoded
    batch by batch as they are embedded (memory does not grow with the number of drawings)."""
    from datasets import load_from_disk

    ds = load_from_disk(dataset_dir)
    return LazyImages(ds["holdout"]), LazyImages(ds["train"])


def reference_folder(cfg: ProjectConfig) -> FolderImages | None:
    """`evaluate.style_references` when it is a folder of drawings (checked now, so a wrong one
    fails before any model loads), decoded with the prepare stage's rules; None for a dataset."""
    path = Path(cfg.evaluate.style_references)
    if path.resolve() == Path(cfg.data.dataset_dir).resolve() or is_dataset(path):
        return None
    return folder_references(path, IntakeRules.from_settings(cfg.prepare))


def reference_images(
    cfg: ProjectConfig, folder: FolderImages | None
) -> tuple[Sequence, LazyImages]:
    """(style references, training drawings): the folder's drawings, or the held-out split of
    the dataset folder `evaluate.style_references` names (by default the training's own)."""
    holdout, train = dataset_images(cfg.data.dataset_dir)
    if folder is not None:
        return folder, train
    path = Path(cfg.evaluate.style_references)
    if path.resolve() == Path(cfg.data.dataset_dir).resolve():
        return holdout, train
    return dataset_images(str(path))[0], train


def load_pipeline(m: ModelSettings):
    """The base model once; LoRAs are loaded into it and swapped by the evaluation."""
    device, dtype = device_and_dtype()
    pipe = load_sd_pipeline(m.pretrained, m.revision, m.variant, device, dtype,
                            m.prediction_type, m.zero_terminal_snr,
                            m.single_file_config)  # fmt: skip
    return pipe, device


def app_encoder(
    pipe, embeddings: dict[str, str] | None, clip_skip: int
) -> tuple[PromptEncoder, dict]:
    """The app's prompt encoder with `generate.embeddings` loaded as `kshd generate` loads them
    (an EasyNegative in a prompt is its vectors, not words), at the base's `model.clip_skip`,
    and the embeddings' identity for the cache."""
    embeddings = dict(embeddings or {})
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if note := clip_skip_note(sdxl, clip_skip):
        log.warning("%s", note)
    if embeddings and sdxl:
        log.warning(
            "generate.embeddings: SD 1.x textual inversions are not loaded into an SDXL base (%s "
            "read as words); set generate.embeddings=null",
            ", ".join(embeddings),
        )
        embeddings = {}
    vectors, notes = load_embeddings(pipe, embeddings)
    for note in notes:
        log.warning("generate.embeddings: %s", note)
    identity = embeddings_identity({name: embeddings[name] for name in vectors})
    return family_encoder(pipe, vectors, clip_skip), identity


def write_outputs(
    cfg: ProjectConfig, settings: SampleSettings, metrics: dict, curve: list, table: list[dict]
) -> None:
    out = Path(cfg.output.reports_dir)
    write_json(out / "metrics.json", metrics)
    write_text(out / "checkpoints.csv", curve_csv(curve))
    grids = sorted((out / "grids").glob("prompt-*.png"))
    sketches = sorted((out / "sketch").glob("sketch-*.png")) if "sketch_drawings" in metrics else []
    labels = grid_row_labels(settings)
    page = render(metrics, curve, grids, list(settings.prompts), labels, out, sketches)
    write_text(out / "index.html", page)
    wb = start_run(cfg.tracking, "evaluate", as_plain(cfg))
    if wb:
        import wandb

        columns = ["variant", "prompt", "seed", "image", "clip_score", "style_similarity"]
        rows = [[r[c] if c != "image" else wandb.Image(r[c]) for c in columns] for r in table]
        wb.log(
            {f"eval/{k}": v for k, v in metrics.items()}
            | {
                "eval/grids": [wandb.Image(str(g), caption=g.stem) for g in grids],
                "eval/sketch": [wandb.Image(str(g), caption=SKETCH_CAPTION) for g in sketches],
                "eval/samples": wandb.Table(columns=columns, data=rows),
            }
        )
        wb.finish()


def run(cfg: ProjectConfig) -> dict:
    """The LoRA (and its checkpoints) against the base model: grids, metrics, the report."""
    e = cfg.evaluate
    folder = reference_folder(cfg) if e.clip_model else None
    resolve_models(cfg)
    settings = SampleSettings.from_settings(e, cfg.caption.trigger_phrase)
    require_model(cfg, "model.pretrained", "model_index.json")
    for key in ("evaluate.clip_model", "evaluate.dino_model", "evaluate.sketch.controlnet"):
        if value_at(cfg, key):
            require_model(cfg, key)
    pipe, device = load_pipeline(cfg.model)
    lora_dir = Path(cfg.output.lora_dir)  # refused in one line where made for another base
    open_weights(lora_dir).check_fits(pipe, "output.lora_dir", lora_dir, cfg.model.pretrained)
    prompt_encoder, embeddings = app_encoder(pipe, cfg.generate.embeddings, cfg.model.clip_skip)
    refs = None
    if e.clip_model:
        encoder = ClipEncoder(e.clip_model, device)
        dino = DinoEncoder(e.dino_model, device) if e.dino_model else None
        refs = References(encoder, *reference_images(cfg, folder), dino)
    found = complete_checkpoints(Path(cfg.output.checkpoints_dir))
    checkpoints = (
        select_checkpoints(found, e.checkpoint_every, e.checkpoint_last) if e.checkpoints else []
    )
    model = model_identity(cfg.model.pretrained, cfg.model.revision)
    model |= cfg.model.encoding_identity()
    if embeddings:  # the base images depend on them (keys without any stay as they were)
        model |= {"embeddings": embeddings}
    base_cache = base_cache_folder(shared_path(cfg.data.cache_dir), model, settings)
    out = Path(cfg.output.reports_dir)
    strength = cfg.train.alpha / cfg.train.rank  # for checkpoints that record no adapter
    trained = final_step(Path(cfg.output.train_reports_dir))
    history = CheckpointCurve(list(checkpoints), trained, e.best_by, strength)
    result = evaluate(pipe, lora_dir, settings, out, refs, history, base_cache, prompt_encoder)
    result.metrics["model_family"] = model_family(cfg.model.pretrained, cfg.model.revision)
    if refs is not None:  # the final goal: the held-out drawings' line art redrawn
        drawings = refs.holdout or refs.train
        result.metrics |= sketch_section(pipe, lora_dir, e.sketch, settings, drawings,
                                         prompt_encoder, refs.encoder.images, out)  # fmt: skip
    write_outputs(cfg, settings, result.metrics, result.curve, result.table)
    return result.metrics


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "evaluate"))


if __name__ == "__main__":
    entry(main, "evaluate")
