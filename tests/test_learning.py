"""Training teaches the style: a LoRA trained with the demo profile's settings on the
bundled KSH samples over the world's plain base, judged from the pixels alone.

Each test trains the demo's run (a LoCon LoRA, rank 16, lr 3e-3, batch 2, 25 epochs, 128 px, each
epoch the samples and as many of the demo's plain regularization drawings, captioned without the
trigger; here on all ten samples: 250 steps) and draws eight held-out characters at two seeds with
the app's engine, base and LoRA, same prompts and seeds, and without the trigger phrase. The
XX
lines), the hair judge by the colour above the eyes. Thresholds come from measured runs with a
margin, stated at each constant. bench/mutations.py breaks training or drawing on purpose and
reports which breakages these bounds notice.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest

from kshd_world.learning import (
    BASE_MAX_KSH,
    FIRST_LOSS_MAX,
    LATENT_STD,
    LEARN,
    LORA_MIN_HAIR,
    LORA_MIN_KSH,
    TRIGGER_MIN_GAIN,
    WORLD_SD,
    Verdict,
    contact_sheet,
    first_loss,
    judge_drawings,
    learn,
    reg_split,
    sample_split,
    save_learned,
    unlike_the_app,
    world_engine,
)

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def base() -> Verdict:
    return judge_drawings(world_engine(None), lora_scale=1.0)


def _learn(work: Path, **changes) -> tuple[Path, float, float]:
    """The demo's LoRA run with `changes`; the LoRA folder (both file formats), latent_std and
    the first steps' mean loss."""
    split = sample_split(work / "data")
    c, result = learn(split, work, reg=reg_split(work / "data"), **changes)
    if (work / "cache").is_dir():  # text states from another CLIP layer: caught here
        unlike = unlike_the_app(c, work / "cache", split["text"])
        assert not unlike, unlike
    lora = save_learned(work / "lora", c, result, len(split))
    return lora, result.latent_std, first_loss([h["loss"] for h in result.history])


def _assert_learned(base: Verdict, lora: Verdict) -> None:
    log.info("base %s; LoRA %s", base, lora)
    assert base.ksh <= BASE_MAX_KSH, f"base {base}"
    assert lora.ksh >= LORA_MIN_KSH, f"base {base}; LoRA {lora}"
    assert lora.hair >= LORA_MIN_HAIR, f"base {base}; LoRA {lora}"


def _assert_trigger_matters(with_trigger: Verdict, without: Verdict) -> None:
    log.info("LoRA with the trigger phrase %s; without %s", with_trigger, without)
    assert with_trigger.ksh - without.ksh >= TRIGGER_MIN_GAIN, (with_trigger, without)


@pytest.mark.slow
def test_the_demo_run_moves_toward_ksh_ink_and_strength_scales_it(tmp_path, base):
    """fp32 with cached inputs (the demo's run): more ink than the base, hair kept; at strength 0
    the app draws the base's very pixels, at 0.5 no more of the style than at 1."""
    lora_dir, latent_std, loss = _learn(tmp_path)
    assert LATENT_STD[0] <= latent_std <= LATENT_STD[1], latent_std
    assert loss <= FIRST_LOSS_MAX, loss
    engine = world_engine(lora_dir)
    full = judge_drawings(engine, lora_scale=1.0)
    contact_sheet([base.images, full.images], tmp_path / "base-vs-lora.png")
    _assert_learned(base, full)
    zero = judge_drawings(engine, lora_scale=0.0)
    for a, b in zip(zero.images, base.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    half = judge_drawings(engine, lora_scale=0.5)
    assert base.ksh <= half.ksh <= full.ksh, (base, half, full)
    bare = judge_drawings(engine, lora_scale=1.0, trigger=False)
    contact_sheet([base.images, full.images, bare.images], tmp_path / "base-lora-no-trigger.png")
    _assert_trigger_matters(full, bare)


@pytest.mark.slow
@pytest.mark.alone  # two training processes on the CPU: nothing else beside them
def test_two_ddp_processes_in_bf16_with_live_inputs_learn_too(tiny_models, tmp_path, base):
    """The other paths in one run (three trainings would cost the suite 5 more minutes): the train
    stage under `accelerate launch` with 2 CPU processes (DDP over gloo), bf16 autocast, latents
    and text states computed live each step, on the demo's samples, captions and settings. Twice
    the images a step, so twice the epochs give the steps of one process (8 training drawings
    after the demo's holdout, and 8 regularization drawings an epoch)."""
    from .helpers.inprocess import run_stage_here
    from .stage_project import accelerate_train, make_project

    root = make_project(
        tmp_path / "p",
        tiny_models,
        [
            f"data.raw_dir={ROOT / 'data/samples'}",
            f"caption.overrides={ROOT / 'data/sample_captions.csv'}",
            f"data.reg_dir={ROOT / 'data/sample_reg'}",
            f"model.pretrained={WORLD_SD}",
            f"train.epochs={2 * LEARN['epochs']}",
            "train.validation_epochs=0",
            "train.checkpointing_steps=1000",
            "train.mixed_precision=bf16",
            "train.cache_latents=false",
        ],
        quick=False,
    )
    for stage in ("prepare", "caption", "dataset"):
        run_stage_here(root, stage)
    metrics = accelerate_train(root)
    assert metrics["latents"] == {}, metrics["latents"]  # live: no latent was cached
    assert LATENT_STD[0] <= metrics["latent_std"] <= LATENT_STD[1], metrics["latent_std"]
    assert metrics["reg_images"] == 10
    # 8 drawings and 8 regularization drawings an epoch, batches of 2 per process
    assert metrics["steps"] == 16 // (2 * 2) * 2 * LEARN["epochs"]
    with (root / "reports/train/loss.csv").open(encoding="utf-8") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert first_loss(losses) <= FIRST_LOSS_MAX, losses[:5]
    engine = world_engine(root / "models/lora")
    lora = judge_drawings(engine, lora_scale=1.0)
    _assert_learned(base, lora)
    _assert_trigger_matters(lora, judge_drawings(engine, lora_scale=1.0, trigger=False))
