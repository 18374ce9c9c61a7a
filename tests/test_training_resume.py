"""Training you can trust: cached = live, exact resume after SIGKILL, no foreign resumes, NaNs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import kshd.training.loop as trainer
from kshd.config.compose import defaults
from kshd.training.checkpoints import complete_checkpoints
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, NonFiniteLoss, train_lora

from .helpers.events import stop_at
from .helpers.inprocess import run_stage_here
from .stage_project import run_stage, stage_env

BASE = dict(resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=7)


def test_cached_and_live_inputs_train_the_same(tiny_models, sample_split, tmp_path):
    losses, stats = {}, {}
    for cached in (False, True, True):
        c = load_components(str(tiny_models["sd"]))
        result = train_lora(
            c,
            sample_split,
            defaults("train", **BASE, cache_latents=cached),
            cache_dir=tmp_path / "cache" if cached else None,
        )
        losses[cached] = [h["loss"] for h in result.history]
        stats[cached] = result.latents
    assert len(losses[True]) == 10
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)
    # 8 square samples are cached (both flips); 2 non-square ones need live random crops
    assert stats[True] == {"cached": 8, "computed_now": 0, "live": 2}  # second cached run
    files = list((tmp_path / "cache").glob("latents-*/*.safetensors"))
    assert len(files) == 8 and set(load_file(str(files[0]))) == {
        "mean",
        "logvar",
        "mean_flip",
        "logvar_flip",
    }


def test_a_different_run_does_not_resume_anothers_checkpoints(tiny_models, sample_split, tmp_path):
    def run(fp: str, batch_size: int):
        c = load_components(str(tiny_models["sd"]))
        s = defaults("train", **{**BASE, "batch_size": batch_size})
        return train_lora(c, sample_split, s, ckpt=CheckpointPolicy(tmp_path, 2, None, True, fp))

    first = run("bs2", 2)
    assert first.resumed_from is None and [s for s, _ in complete_checkpoints(tmp_path)] == [
        2,
        4,
        6,
        8,
        10,
    ]
    other = run("bs1", 1)
    assert other.resumed_from is None and other.steps == 20
    again = run("bs1", 1)
    assert again.resumed_from == "checkpoint-20" and again.steps == 20


def test_non_finite_loss_stops_naming_the_step_and_images(
    tiny_models, sample_split, tmp_path, monkeypatch
):
    real, calls = trainer.diffusion_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer, "diffusion_loss", poisoned)
    c = load_components(str(tiny_models["sd"]))
    with pytest.raises(NonFiniteLoss, match=r"step 3; images in the batch: .+\.png"):
        train_lora(
            c,
            sample_split,
            defaults("train", **BASE),
            ckpt=CheckpointPolicy(tmp_path, 2, None, True, "fp"),
        )
    [(step, path)] = complete_checkpoints(tmp_path)
    assert (
        step == 2
        and torch.isfinite(
            torch.cat([t.flatten() for t in load_file(str(path / "lora.safetensors")).values()])
        ).all()
    )


def _lora(root):
    return load_file(str(root / "models/lora/pytorch_lora_weights.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "prodigy", "schedulefree_adamw"])
def test_sigkill_mid_training_then_rerun_equals_an_uninterrupted_run(
    ready_project, tmp_path, optimizer
):
    """The killed stage's process, its rerun's (a new process, as a user runs it again) and the
    uninterrupted run's (this one) are three: the LoRA must not depend on the process, whatever
    the optimizer (Prodigy's d and sums, schedule-free's averaged weights are in the checkpoint)."""
    args = ["train.epochs=6", "train.checkpointing_steps=3", "train.validation_epochs=2",
            f"train/optimizer={optimizer}"]  # fmt: skip
    killed = tmp_path / "killed"
    straight = ready_project(killed, args)
    # SIGKILL right after the log line that says checkpoint-6 is in place, before step 7
    stop_at(killed, "train", "SIGKILL", r"log:checkpoint-6 saved", stage_env())
    assert complete_checkpoints(killed / "models/checkpoints")[-1][0] == 6
    assert not (killed / "models/lora/pytorch_lora_weights.safetensors").exists()
    run_stage(killed, "train")
    run_stage_here(straight, "train")
    metrics = json.loads((killed / "reports/train/metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-6" and metrics["steps"] == 24
    a, b = _lora(killed), _lora(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"
    losses = [
        (killed / "reports/train/loss.csv").read_text().splitlines(),
        (straight / "reports/train/loss.csv").read_text().splitlines(),
    ]
    assert [r.split(",")[:4] for r in losses[0]] == [r.split(",")[:4] for r in losses[1]]


@pytest.mark.slow
def test_short_run_still_samples_the_last_epoch_and_writes_every_dvc_output(
    ready_project, tmp_path
):
    """A sweep point shorter than `validation_epochs` or `checkpointing_steps` must not fail DVC."""
    args = ["train.epochs=3", "train.validation_epochs=2", "train.checkpointing_steps=1000"]
    root = tmp_path / "p"
    ready_project(root, args)
    run_stage_here(root, "train")
    samples = sorted(p.name for p in (root / "reports/validation").glob("*.png"))
    assert samples == ["epoch-0002.png", "epoch-0003.png"]
    assert (root / "models/checkpoints").is_dir()
    assert complete_checkpoints(root / "models/checkpoints") == []
    assert not (root / "models/lora/ema").exists()  # the EMA's pair: only with train.ema_decay
