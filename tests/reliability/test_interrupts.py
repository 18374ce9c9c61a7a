"""Ctrl-C during training: the step in flight finishes, a checkpoint is written, a rerun resumes.

The resumed run (a new process, as a user runs it again) must equal one that was never
interrupted (bit-identical LoRA on CPU; run in the test's process).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from kshd.training.checkpoints import complete_checkpoints

from ..helpers.events import stop_at
from ..helpers.inprocess import run_stage_here
from ..stage_project import run_stage, stage_env

pytestmark = pytest.mark.slow
STEPS = 24  # 8 training drawings, batch 2, 6 epochs
AT = 3  # the step Ctrl-C arrives after


def _lora(root):
    return load_file(str(root / "models/lora/pytorch_lora_weights.safetensors"))


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_equals_an_uninterrupted_run(
    ready_project, tmp_path
):
    args = ["train.epochs=6", "train.checkpointing_steps=1000", "train.validation_epochs=0"]
    stopped = tmp_path / "stopped"
    straight = ready_project(stopped, args)
    # Ctrl-C lands right after step 3 is counted, on any machine: the run finishes that step
    child = stop_at(stopped, "train", "SIGINT", f"progress:train:{AT}", stage_env())
    text = child.text
    assert child.proc.returncode == 130, text[-3000:]
    [(step, path)] = complete_checkpoints(stopped / "models/checkpoints")
    assert step == AT
    assert f"interrupted after step {AT}" in text and "run again to resume" in text
    assert not (stopped / "models/lora/pytorch_lora_weights.safetensors").exists()
    assert json.loads((path / "state.json").read_text())["progress"]["step"] == AT

    run_stage(stopped, "train")
    run_stage_here(straight, "train")
    metrics = json.loads((stopped / "reports/train/metrics.json").read_text())
    assert metrics["resumed_from"] == f"checkpoint-{step}" and metrics["steps"] == STEPS
    a, b = _lora(stopped), _lora(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"
