"""Training changes what the app draws (issue 15): a LoRA trained on the bundled KSH samples over
the world's plain base, judged from the pixels alone.

What is proven so far is less than the issue asks: at the demo's settings (lr 1e-2, 16 steps)
the LoRA darkens lines but also leaves dark blotches that the ink judge counts as KSH, and the
world CLIP's style_gain is negative (-0.23 in the demo). So these tests catch a LoRA that changes
nothing (not trained, not applied, saved at the wrong scale) or erases the content; a test that
the KSH traits themselves are learned (>= 80% vs <= 20%) is still open.

Each test trains the demo's run (8-10 drawings, batch 2, 4 epochs, lr 1e-2, 128 px) and draws
eight held-out characters at two seeds with the app's engine, base and LoRA, same prompts and
seeds. The judges (kshd.builders.world_judges) are validated on ground truth in test_world.py.
Thresholds come from measured runs with a margin, stated at each constant. bench/mutations.py breaks
training or drawing on purpose and reports which breakages these bounds notice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from accelerate.state import AcceleratorState

from kshd.config import defaults
from kshd.lora import save_lora
from kshd.training.loop import train_lora
from kshd.training.settings import load_components

from .helpers.learning import (
    LEARN,
    WORLD_SD,
    Verdict,
    contact_sheet,
    judge_drawings,
    sample_split,
    world_engine,
)
from .helpers.lora_files import tiny_info

ROOT = Path(__file__).resolve().parent.parent

# Measured on the committed world (2026-11-29, fp32, cached inputs): the base's drawings are
# judged KSH in 2 of 16, the LoRA's in 6 (one process) to 9 (two, DDP) of 16; hair colour right
# in 10 of 16 for the base and 6 to 9 for the LoRA (chance: 1 in 6). The goal (>= 80% vs
# <= 20%) is not reached yet; these bounds catch a LoRA that changes nothing or erases content.
BASE_MAX_KSH = 0.25
LORA_MIN_GAIN = 0.125  # the LoRA judged KSH in at least 2 more of the 16 drawings than the base
LORA_MIN_HAIR = 0.3


@pytest.fixture(scope="module")
def base() -> Verdict:
    return judge_drawings(world_engine(None), lora_scale=1.0)


def _learn(work: Path, **changes) -> Path:
    """The demo's LoRA run with `changes`; the LoRA folder (both file formats)."""
    split = sample_split(work / "data")
    c = load_components(str(WORLD_SD))
    s = defaults("train", **{**LEARN, **changes})
    cache = work / "cache" if s.cache_latents else None
    AcceleratorState._reset_state()  # each run's Accelerator takes its own mixed precision
    try:
        result = train_lora(c, split, s, cache_dir=cache)
    finally:
        AcceleratorState._reset_state()
    info = tiny_info(steps=result.steps, epochs=result.epochs, num_images=len(split), seed=7)
    save_lora(work / "lora", c.unet, c.text_encoder, info)
    return work / "lora"


def _assert_learned(base: Verdict, lora: Verdict) -> None:
    assert base.ksh <= BASE_MAX_KSH, f"base {base}"
    assert lora.ksh >= base.ksh + LORA_MIN_GAIN, f"base {base}; LoRA {lora}"
    assert lora.hair >= LORA_MIN_HAIR, f"base {base}; LoRA {lora}"


@pytest.mark.slow
def test_the_demo_run_moves_toward_ksh_ink_and_strength_scales_it(tmp_path, base):
    """fp32 with cached inputs (the demo's run): more ink than the base, hair kept; at strength 0
    the app draws the base's very pixels, at 0.5 no more of the style than at 1."""
    engine = world_engine(_learn(tmp_path))
    full = judge_drawings(engine, lora_scale=1.0)
    contact_sheet([base.images, full.images], tmp_path / "base-vs-lora.png")
    _assert_learned(base, full)
    zero = judge_drawings(engine, lora_scale=0.0)
    for a, b in zip(zero.images, base.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    half = judge_drawings(engine, lora_scale=0.5)
    assert base.ksh <= half.ksh <= full.ksh, (base, half, full)


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"cache_latents": False}, id="fp32-live"),
        pytest.param({"mixed_precision": "bf16"}, id="bf16-cached"),
    ],
)
def test_other_input_paths_and_precisions_learn_too(tmp_path, base, changes):
    lora = judge_drawings(world_engine(_learn(tmp_path, **changes)), lora_scale=1.0)
    _assert_learned(base, lora)


@pytest.mark.slow
def test_two_ddp_processes_learn_the_style_too(tiny_models, tmp_path, base):
    """The train stage under `accelerate launch` with 2 CPU processes (DDP over gloo) on the demo's
    samples and captions: twice the images a step, so 8 epochs give the 16 steps of one process."""
    from .stage_project import accelerate_train, make_project, run_stage

    root = make_project(
        tmp_path / "p",
        tiny_models,
        [
            f"data.raw_dir={ROOT / 'data/samples'}",
            f"caption.overrides={ROOT / 'data/sample_captions.csv'}",
            f"model.pretrained={WORLD_SD}",
            "train.epochs=8",
            "train.validation_epochs=0",
        ],
    )
    for stage in ("prepare", "caption", "dataset"):
        run_stage(root, stage)
    metrics = accelerate_train(root)
    assert metrics["steps"] == 16
    lora = judge_drawings(world_engine(root / "models/lora"), lora_scale=1.0)
    _assert_learned(base, lora)
