"""Ctrl-C during training: the step in flight finishes, a checkpoint is written, a rerun resumes.

The resumed run must equal one that was never interrupted (bit-identical LoRA on CPU).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from kshd.training.checkpoints import complete_checkpoints

from ..stage_project import ready_to_train, run_stage, stage_cmd, stage_env

pytestmark = pytest.mark.slow
STEPS = 24  # 8 training drawings, batch 2, 6 epochs


def _lora(root):
    return load_file(str(root / "models/lora/pytorch_lora_weights.safetensors"))


def _wait_for_step(log, proc, at_least: int) -> int:
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        done = [int(n) for n in re.findall(rf"(\d+)/{STEPS} \[", log.read_text(errors="replace"))]
        if done and max(done) >= at_least:
            return max(done)
        time.sleep(0.05)
    raise AssertionError(f"training never reached step {at_least}:\n{log.read_text()[-2000:]}")


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_equals_an_uninterrupted_run(tiny_models, tmp_path):
    args = ["train.epochs=6", "train.checkpointing_steps=1000", "train.validation_epochs=0"]
    stopped = tmp_path / "stopped"
    straight = ready_to_train(stopped, tiny_models, args)
    log = tmp_path / "train.log"
    env = stage_env()
    with log.open("w") as out:
        proc = subprocess.Popen(stage_cmd("train"), cwd=stopped, stdout=out, stderr=out, env=env)
        seen = _wait_for_step(log, proc, 3)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
    text = log.read_text(errors="replace")
    assert code == 130, text[-3000:]
    [(step, path)] = complete_checkpoints(stopped / "models/checkpoints")
    assert seen <= step < STEPS
    assert f"interrupted after step {step}" in text and "run again to resume" in text
    assert not (stopped / "models/lora/pytorch_lora_weights.safetensors").exists()
    assert json.loads((path / "state.json").read_text())["progress"]["step"] == step

    run_stage(stopped, "train")
    run_stage(straight, "train")
    metrics = json.loads((stopped / "models/lora/metrics.json").read_text())
    assert metrics["resumed_from"] == f"checkpoint-{step}" and metrics["steps"] == STEPS
    a, b = _lora(stopped), _lora(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"
