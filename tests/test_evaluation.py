"""Evaluation: fixed seeds reproduce, a zero-strength LoRA changes nothing, grids are laid out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from kshd.config.compose import defaults
from kshd.evaluation.evaluate import (
    HEADLINE,
    CheckpointCurve,
    Evaluation,
    References,
    evaluate,
    grid,
    mean_abs_difference,
    select_checkpoints,
    strip_trigger,
)

from .conftest import ROOT
from .helpers.settings import QUICK_EVAL, sample_settings


def _pipe(tiny_models):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _drawings() -> list:
    return [Image.open(p).convert("RGB") for p in sorted((ROOT / "data/samples").glob("*.png"))]


def _evaluate(
    pipe, lora_dir, s, out, tiny_models, checkpoints=(), final_step=None, base_cache=None, dino=None
) -> Evaluation:
    """evaluate() with the tiny CLIP, 3 held-out drawings and the rest as training set."""
    from kshd.evaluation.metrics import ClipEncoder

    drawings = _drawings()
    refs = References(ClipEncoder(str(tiny_models["clip"])), drawings[:3], drawings[3:], dino)
    train = defaults("train")
    curve = CheckpointCurve(
        list(checkpoints), final_step, defaults("evaluate").best_by, train.alpha / train.rank
    )
    return evaluate(pipe, lora_dir, s, out, refs, curve, base_cache)


def test_scoring_without_a_curve_names_what_is_missing(tmp_path):
    """best_by has no default in code: scoring against references needs the caller's curve."""
    refs = References(encoder=None)
    with pytest.raises(ValueError, match="evaluate.best_by") as err:
        evaluate(None, tmp_path, sample_settings(**QUICK_EVAL), tmp_path, refs, None)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())


def test_grid_and_difference():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    g = grid([[red, blue, red], [blue, red, blue]])
    assert g.size == (24, 16) and g.getpixel((9, 1)) == (0, 0, 255)
    assert mean_abs_difference([[red]], [[red]]) == 0.0
    assert mean_abs_difference([[red]], [[blue]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("scale", "changed"), [(1.0, True), (0.0, False)])
def test_evaluate_lora(trained, tiny_models, tmp_path, scale, changed):
    lora_dir, _, _ = trained
    pipe = _pipe(tiny_models)
    s = sample_settings(
        **{**QUICK_EVAL, "lora_scales": (scale,)},
        prompts=("drawn by KSH drawing style, a girl", "a boy, drawn by KSH drawing style"),
        trigger_phrase="drawn by KSH drawing style",
    )
    result = _evaluate(pipe, lora_dir, s, tmp_path, tiny_models)
    metrics, curve = result.metrics, result.curve
    assert metrics["num_images"] == 4
    assert (metrics["lora_pixel_delta"] > 0) == changed
    if not changed:  # strength 0 is the base model: no style added
        assert metrics["style_gain"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["clip_score"] == pytest.approx(metrics["clip_score_base"], abs=1e-6)
    for key in ("clip_score", "style_similarity", "memorization", "diversity", "trigger_gain"):
        assert isinstance(metrics[key], float) and -1 <= metrics[key] <= 2
    assert set(metrics["by_strength"]) == {str(scale)}
    assert curve == [{"step": None, **{k: metrics[k] for k in HEADLINE}}]  # no checkpoints given
    grids = sorted((tmp_path / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["prompt-00.png", "prompt-01.png"]
    assert Image.open(grids[0]).size == (128, 192)  # rows base | LoRA | no trigger; 2 seeds


def test_strip_trigger():
    t = "drawn by KSH drawing style"
    assert strip_trigger(f"{t}, a girl, smile", t) == "a girl, smile"
    assert strip_trigger(f"a girl, {t}", t) == "a girl"
    assert strip_trigger("a girl", "") == "a girl"


def test_select_checkpoints():
    found = [(s, Path(f"checkpoint-{s}")) for s in (2, 4, 6, 8, 10)]
    assert select_checkpoints(found) == found
    assert [s for s, _ in select_checkpoints(found, every=2)] == [2, 6, 10]
    assert [s for s, _ in select_checkpoints(found, last=2)] == [8, 10]
    assert [s for s, _ in select_checkpoints(found, every=2, last=1)] == [10]


def test_checkpoints_are_scored_and_the_best_is_recorded(tiny_models, sample_split, tmp_path):
    from kshd.adapters.files import write_diffusers
    from kshd.adapters.registry import build_adapter
    from kshd.config.compose import defaults
    from kshd.training.checkpoints import complete_checkpoints
    from kshd.training.components import load_components
    from kshd.training.loop import CheckpointPolicy, train_lora

    c = load_components(str(tiny_models["sd"]))
    train = defaults("train", resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=7)
    train_lora(
        c, sample_split, train, ckpt=CheckpointPolicy(tmp_path / "ckpt", 4, None, True, "fp")
    )
    lora = build_adapter(train.adapter, train.rank, train.alpha)
    write_diffusers(lora.diffusers_tensors(lora.tensors(c.unet)), tmp_path)
    pipe = _pipe(tiny_models)
    s = sample_settings(
        **QUICK_EVAL,
        prompts=("drawn by KSH drawing style, a girl",),
        trigger_phrase="drawn by KSH drawing style",
    )
    found = complete_checkpoints(tmp_path / "ckpt")
    assert [s for s, _ in found] == [4, 8]
    result = _evaluate(pipe, tmp_path, s, tmp_path / "out", tiny_models, found, final_step=10)
    metrics, curve = result.metrics, result.curve
    assert [r["step"] for r in curve] == [4, 8, 10]
    assert curve[-1]["style_gain"] == metrics["style_gain"]
    assert len({r["style_similarity"] for r in curve}) == 3  # each checkpoint drew differently
    best = max(curve, key=lambda r: r["style_gain"])
    assert metrics["best_checkpoint"] == {
        "step": best["step"],
        "by": "style_gain",
        "value": best["style_gain"],
    }


def test_base_images_are_drawn_once_and_reused(trained, tiny_models, tmp_path, monkeypatch):
    import kshd.evaluation.evaluate as ev
    from kshd.evaluation.evaluate import base_cache_folder

    lora_dir, _, _ = trained
    labels = []
    real = ev.sample
    monkeypatch.setattr(ev, "sample", lambda *a, **k: labels.append(a[4]) or real(*a, **k))
    s = sample_settings(
        **QUICK_EVAL,
        prompts=("drawn by KSH drawing style, a girl",),
        trigger_phrase="drawn by KSH drawing style",
    )
    folder = base_cache_folder(tmp_path / "cache", {"id": "tiny"}, s)
    results = []
    for _ in range(2):
        pipe = _pipe(tiny_models)
        results.append(
            _evaluate(pipe, lora_dir, s, tmp_path / "out", tiny_models, base_cache=folder).metrics
        )
    assert labels.count("base") == 1 and len(list(folder.glob("*.png"))) == 2
    assert results[0] == results[1]
    other = base_cache_folder(tmp_path / "cache", {"id": "tiny"}, replace(s, seeds=(0, 2)))
    assert other != folder  # other seeds, other images


def test_per_image_table_agrees_with_the_aggregates(trained, tiny_models, tmp_path):
    lora_dir, _, _ = trained
    pipe = _pipe(tiny_models)
    s = sample_settings(
        **QUICK_EVAL,
        prompts=("drawn by KSH drawing style, a girl", "a boy"),
        trigger_phrase="drawn by KSH drawing style",
    )
    result = _evaluate(pipe, lora_dir, s, tmp_path, tiny_models)
    metrics, table = result.metrics, result.table
    assert len(table) == 2 * 2 * 2  # base and LoRA, 2 prompts, 2 seeds
    lora = [r for r in table if r["variant"] == "LoRA x1.0"]
    base = [r for r in table if r["variant"] == "base"]
    assert sum(r["clip_score"] for r in lora) / 4 == pytest.approx(metrics["clip_score"], abs=1e-5)
    assert sum(r["style_similarity"] for r in base) / 4 == pytest.approx(
        metrics["style_similarity_base"], abs=1e-5
    )
    assert {(r["prompt"], r["seed"]) for r in lora} == {(p, k) for p in s.prompts for k in s.seeds}


def test_optional_dino_style_metric(trained, tiny_models, tmp_path):
    from kshd.evaluation.metrics import DinoEncoder

    lora_dir, _, _ = trained
    pipe = _pipe(tiny_models)
    s = sample_settings(
        **{**QUICK_EVAL, "lora_scales": (0.0, 1.0)},
        prompts=("drawn by KSH drawing style, a girl",),
    )
    metrics = _evaluate(
        pipe, lora_dir, s, tmp_path, tiny_models, dino=DinoEncoder(str(tiny_models["dino"]))
    ).metrics
    assert isinstance(metrics["style_similarity_dino"], float)
    assert metrics["by_strength"]["0.0"]["style_gain_dino"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["style_gain_dino"] == pytest.approx(
        metrics["style_similarity_dino"] - metrics["style_similarity_dino_base"]
    )


def test_scorer_embeds_each_image_set_once():
    class Counting:
        calls = 0

        def images(self, imgs):
            Counting.calls += 1
            return torch.ones(len(imgs), 4)

        def texts(self, texts):
            return torch.ones(len(texts), 4)

    from kshd.evaluation.evaluate import Scorer

    drawing = Image.new("RGB", (8, 8))
    scorer = Scorer(Counting(), sample_settings(prompts=("a",), seeds=(0, 1)), [], [drawing])
    assert Counting.calls == 1  # no holdout: the training drawings serve as references too
    imgs = [[drawing, drawing]]
    scorer(imgs)
    scorer.per_image(imgs)
    assert Counting.calls == 2
