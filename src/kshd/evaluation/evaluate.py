"""Fixed-seed samples with and without the LoRA, a grid per prompt, and numbers to compare runs.

Samples are drawn as the app draws (`kshd generate`): A1111 prompt syntax and chunks through
PromptEncoder, the prefixes joined as the app joins them, the app's sampler; so a metric describes
the pictures a user gets for the same prompt, seed and settings. Where the training kept an EMA
of the weights (`train.ema_decay`), the EMA's files and each checkpoint's EMA are scored too, at
the headline strength, their metrics named with `ema_`, and may be the best checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kshd.adapters.files import ema_folder
from kshd.adapters.weights import AdapterWeights, open_weights
from kshd.config.values import BEST_BY
from kshd.evaluation.sampling import (  # noqa: F401  (re-exported: the evaluation's public names)
    Images,
    SampleSettings,
    grid,
    sample,
    strip_trigger,
    use_sampler,
    validation_images,
)
from kshd.prompts.encoding import join_prefix
from kshd.training.checkpoints import EMA_TENSORS

log = logging.getLogger(__name__)


HEADLINE = BEST_BY  # the headline metrics: those `evaluate.best_by` may name
EMA = "ema_"  # the EMA weights' headline metrics, beside the raw weights' (metrics, curve)


def mean_abs_difference(a: Images, b: Images) -> float:
    """Mean absolute pixel difference in [0, 1]: 0 when the LoRA changes nothing."""
    diffs = [
        np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).mean() / 255.0
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    ]
    return float(np.mean(diffs))


@dataclass
class Samples:
    base: Images
    lora: dict[float, Images]
    no_trigger: Images  # the headline strength, prompts without the trigger phrase


def base_cache_folder(root: Path, model: dict, s: SampleSettings) -> Path:
    """Where the base model's images for these prompts, seeds and sampler settings live: keyed
    by the fields SampleSettings marks DEFINES_RESULT, as the app encodes prompts."""
    import hashlib
    import json

    from kshd.config.fill import defining

    key = json.dumps(
        {"model": model, "encoding": "a1111", **defining(s)}, sort_keys=True, default=str
    )
    return root / f"eval-base-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def cached_base(pipe, s: SampleSettings, folder: Path | None, prompt_encoder=None) -> Images:
    """The base model's images, drawn once per (model, prompts, seeds, settings) and kept as PNG
    (lossless, so the metrics are the same whether they came from the cache or not)."""
    names = [[f"p{i:03d}-s{seed}.png" for seed in s.seeds] for i in range(len(s.prompts))]
    if folder and all((folder / n).is_file() for row in names for n in row):
        log.info("base-model images from the cache %s", folder)
        return [[Image.open(folder / n).convert("RGB") for n in row] for row in names]
    base = sample(pipe, s.prompts, s, None, "base", prompt_encoder)
    if folder:
        from kshd.fileio import atomic_path

        folder.mkdir(parents=True, exist_ok=True)
        for row_n, row_i in zip(names, base, strict=True):
            for n, img in zip(row_n, row_i, strict=True):
                with atomic_path(folder / n) as tmp:
                    img.save(tmp, format="PNG")
    return base


def generate_samples(
    pipe, lora_dir: Path, s: SampleSettings, base_cache: Path | None = None, prompt_encoder=None
) -> Samples:
    """`prompt_encoder`: the app's PromptEncoder with its textual inversions (None: plain)."""

    use_sampler(pipe, s.sampler)
    base = cached_base(pipe, s, base_cache, prompt_encoder)
    open_weights(lora_dir).attach(pipe)
    lora = {
        scale: sample(pipe, s.prompts, s, scale, f"LoRA x{scale}", prompt_encoder)
        for scale in s.lora_scales
    }
    # without the trigger anywhere: neither in the prompt nor in the (weighted) prefix
    plain = [strip_trigger(join_prefix(s.positive_prefix, p), s.trigger_phrase) for p in s.prompts]
    no_trigger = sample(
        pipe, plain, replace(s, positive_prefix=""), s.lora_scales[-1], "no trigger", prompt_encoder
    )
    return Samples(base, lora, no_trigger)


def grid_row_labels(s: SampleSettings) -> list[str]:
    return ["base", *(f"LoRA x{k}" for k in s.lora_scales), "no trigger"]


def save_grids(samples: Samples, s: SampleSettings, out_dir: Path) -> list[Path]:
    """One PNG per prompt: rows base | LoRA at each strength | no trigger; columns = seeds."""
    grids_dir = out_dir / "grids"
    grids_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(s.prompts)):
        rows = [
            samples.base[i],
            *(samples.lora[k][i] for k in s.lora_scales),
            samples.no_trigger[i],
        ]
        paths.append(grids_dir / f"prompt-{i:02d}.png")
        grid(rows).save(paths[-1])
    return paths


class Scorer:
    """Embeds the references once, then scores any set of samples of the evaluation prompts."""

    def __init__(self, encoder, s: SampleSettings, holdout: list, train: list, dino=None):
        self.encoder, self.k, self.dino = encoder, len(s.seeds), dino
        self.dino_refs = dino.images(holdout or train) if dino else None
        self.texts = encoder.texts(
            [strip_trigger(p, s.trigger_phrase) for p in s.prompts for _ in s.seeds]
        )
        self.trained = encoder.images(train)
        self.refs = encoder.images(holdout) if holdout else self.trained
        self._seen: dict[int, tuple[Images, torch.Tensor]] = {}

    def embed(self, imgs: Images) -> torch.Tensor:
        """Embeddings of an image set, computed once (the set is kept, so its id stays valid)."""
        if id(imgs) not in self._seen:
            emb = self.encoder.images([im for row in imgs for im in row])
            self._seen[id(imgs)] = (imgs, emb)
        return self._seen[id(imgs)][1]

    def per_image(self, imgs: Images) -> list[tuple[float, float]]:
        """(clip_score, style_similarity) of each image, prompt-major as `imgs` is laid out."""
        from kshd.evaluation import metrics as m

        emb = self.embed(imgs)
        clip = (m.cosine_matrix(emb, self.texts).diagonal()).tolist()
        style = m.cosine_matrix(emb, self.refs).mean(dim=1).tolist()
        return list(zip(clip, style, strict=True))

    def __call__(self, imgs: Images) -> dict:
        from kshd.evaluation import metrics as m

        emb = self.embed(imgs)
        k = self.k
        values = {
            "clip_score": m.clip_score(emb, self.texts),
            "style_similarity": m.style_similarity(emb, self.refs),
            "memorization": m.memorization(emb, self.trained),
            "diversity": m.diversity([emb[i : i + k] for i in range(0, len(emb), k)]),
        }
        if self.dino:
            dino = self.dino.images([im for row in imgs for im in row])
            values["style_similarity_dino"] = m.style_similarity(dino, self.dino_refs)
        return values


def score(samples: Samples, s: SampleSettings, scorer: Scorer) -> dict:
    """All metrics; the headline ones are for the last strength in lora_scales."""
    base = scorer(samples.base)
    by_strength = {str(sc): scorer(imgs) for sc, imgs in samples.lora.items()}
    for values in by_strength.values():
        values["style_gain"] = values["style_similarity"] - base["style_similarity"]
        if "style_similarity_dino" in base:
            values["style_gain_dino"] = (
                values["style_similarity_dino"] - base["style_similarity_dino"]
            )
    head = by_strength[str(s.lora_scales[-1])]
    no_trigger = scorer(samples.no_trigger)
    return {
        **head,
        **{f"{key}_base": v for key, v in base.items()},
        "style_similarity_no_trigger": no_trigger["style_similarity"],
        "trigger_gain": head["style_similarity"] - no_trigger["style_similarity"],
        "by_strength": by_strength,
    }


def table_rows(samples: Samples, s: SampleSettings, scorer: Scorer) -> list[dict]:
    """One row per image (base and headline LoRA): for the wandb table."""
    rows = []
    for variant, imgs in (
        ("base", samples.base),
        (f"LoRA x{s.lora_scales[-1]}", samples.lora[s.lora_scales[-1]]),
    ):
        scores = iter(scorer.per_image(imgs))
        for prompt, row in zip(s.prompts, imgs, strict=True):
            for seed, img in zip(s.seeds, row, strict=True):
                clip, style = next(scores)
                rows.append(
                    {
                        "variant": variant,
                        "prompt": prompt,
                        "seed": seed,
                        "image": img,
                        "clip_score": clip,
                        "style_similarity": style,
                    }
                )
    return rows


def select_checkpoints(
    found: list[tuple[int, Path]], every: int = 1, last: int | None = None
) -> list[tuple[int, Path]]:
    """Every k-th saved checkpoint (counting back from the newest), then the last n of those."""
    chosen = found[::-1][:: max(every, 1)][::-1]
    return chosen[-last:] if last else chosen


def drawn_scores(
    pipe, weights: AdapterWeights, s: SampleSettings, scorer: Scorer, base_style: float,
    label: str, prompt_encoder=None,
) -> dict:  # fmt: skip
    """The metrics of an adapter's weights drawn at the headline LoRA scale, in place of the
    one drawn before (of the same run and kind)."""
    weights.adapter.detach(pipe)
    weights.attach(pipe)
    images = sample(pipe, s.prompts, s, s.lora_scales[-1], label, prompt_encoder)
    values = scorer(images)
    return {**values, "style_gain": values["style_similarity"] - base_style}


def checkpoint_curve(
    pipe,
    checkpoints: list[tuple[int, Path]],
    s: SampleSettings,
    scorer: Scorer,
    base_style: float,
    strength: float,
    prompt_encoder=None,
) -> list[dict]:
    """The headline metrics of each checkpoint's adapter, at the headline LoRA scale
    (`strength`: the run's alpha / rank, for checkpoints that do not record theirs), and of
    its EMA where it keeps one (`ema_` columns)."""

    def scores(weights: AdapterWeights, label: str) -> dict:
        return drawn_scores(pipe, weights, s, scorer, base_style, label, prompt_encoder)

    rows = []
    for step, path in checkpoints:
        row = {"step": step, **scores(open_weights(path, strength), f"checkpoint {step}")}
        if (path / EMA_TENSORS).is_file():
            ema = scores(open_weights(path / EMA_TENSORS, strength), f"checkpoint {step} EMA")
            row |= {f"{EMA}{k}": ema[k] for k in HEADLINE}
        rows.append(row)
    return rows


def best_checkpoint(curve: list[dict], by: str) -> dict:
    """The row (raw or EMA weights) with the highest `by`; the raw weights win a tie. `ema`
    says which, in runs that kept an EMA."""
    kept = any(f"{EMA}{by}" in r for r in curve)
    candidates = [(r, "") for r in curve] + [(r, EMA) for r in curve if f"{EMA}{by}" in r]
    row, prefix = max(candidates, key=lambda c: c[0][f"{c[1]}{by}"])
    best = {"step": row["step"], "by": by, "value": row[f"{prefix}{by}"]}
    return best | ({"ema": prefix == EMA} if kept else {})


@dataclass(frozen=True)
class References:
    """What samples are scored against: the CLIP embedder (DINO's too, if given) and the
    drawings, held out (the style reference) and trained on (for memorization)."""

    encoder: object
    holdout: list = field(default_factory=list)
    train: list = field(default_factory=list)
    dino: object = None


@dataclass(frozen=True)
class CheckpointCurve:
    """The training's checkpoints to score as a curve, the step of the final LoRA (the same step
    is the same LoRA, scored once), and the metric that picks the best (`evaluate.best_by`;
    no default here, conf/ holds it)."""

    checkpoints: list[tuple[int, Path]]
    final_step: int | None
    best_by: str
    strength: float  # the training's alpha / rank, for checkpoints that do not record it


@dataclass
class Evaluation:
    metrics: dict
    curve: list[dict]  # one row per checkpoint, the final LoRA last
    table: list[dict]  # one row per image (base and headline LoRA), for the wandb table


def evaluate(
    pipe,
    lora_dir: Path,
    s: SampleSettings,
    out_dir: Path,
    refs: References | None = None,
    history: CheckpointCurve | None = None,
    base_cache: Path | None = None,
    prompt_encoder=None,
) -> Evaluation:
    """Sample base and LoRA at fixed seeds, save grids, measure style and prompt-following;
    with checkpoints, the same for each, and the best one by `history.best_by`.

    Without `refs` only the pixel change is measured (no embedder is loaded). `prompt_encoder`: the
    app's PromptEncoder with the textual inversions of `generate.embeddings` loaded. With `refs`,
    `history` is required: it names the metric that picks the best (conf's `evaluate.best_by`)."""
    if refs is not None and history is None:
        raise ValueError(
            "evaluate: scoring against refs needs history=CheckpointCurve(checkpoints, final_step, "
            "best_by, strength) with best_by from conf's evaluate.best_by"
        )
    samples = generate_samples(pipe, lora_dir, s, base_cache, prompt_encoder)
    save_grids(samples, s, out_dir)
    head = samples.lora[s.lora_scales[-1]]
    metrics = {
        "num_prompts": len(s.prompts),
        "num_images": len(s.prompts) * len(s.seeds),
        "lora_pixel_delta": round(mean_abs_difference(samples.base, head), 6),
    }
    out = Evaluation(metrics, [], [])
    if refs is not None:
        scorer = Scorer(refs.encoder, s, refs.holdout, refs.train, refs.dino)
        metrics |= score(samples, s, scorer)
        out.table = table_rows(samples, s, scorer)
        curve = checkpoint_curve(
            pipe,
            list(history.checkpoints),
            s,
            scorer,
            metrics["style_similarity_base"],
            history.strength,
            prompt_encoder,
        )
        if ema := ema_folder(lora_dir):
            base_style = metrics["style_similarity_base"]
            values = drawn_scores(pipe, open_weights(ema), s, scorer, base_style, "EMA",
                                  prompt_encoder)  # fmt: skip
            metrics |= {f"{EMA}{k}": values[k] for k in HEADLINE}
        headline = (*HEADLINE, *(f"{EMA}{k}" for k in HEADLINE))
        final = {"step": history.final_step, **{k: metrics[k] for k in headline if k in metrics}}
        out.curve = [r for r in curve if r["step"] != history.final_step] + [final]
        metrics["best_checkpoint"] = best_checkpoint(out.curve, history.best_by)
    log.info("evaluate: %s", {k: v for k, v in metrics.items() if k != "by_strength"})
    return out
