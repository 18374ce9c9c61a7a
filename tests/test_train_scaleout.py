"""The train stage unchanged under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import pytest
import torch

from .helpers.lora_files import unet_with_and_without
from .stage_project import accelerate_train

# two training processes on the CPU: nothing else beside them (tests/helpers/parallel.py)
pytestmark = [pytest.mark.slow, pytest.mark.alone]


@pytest.mark.parametrize("optimizer", ["adamw", "schedulefree_adamw"])
def test_two_process_ddp_training(optimizer, tiny_models, ready_project, tmp_path):
    """Schedule-free too: every process switches its weights for validation and checkpoints,
    which only the main process writes."""
    root = tmp_path / "p"
    ready_project(root, [f"train/optimizer={optimizer}"])
    metrics, proc = accelerate_train(root, with_output=True)
    # 8 training drawings, batch 2 on each of 2 processes: 2 steps an epoch, 4 epochs
    assert metrics["steps"] == 8 and metrics["epochs"] == 4
    assert proc.stderr.count("__main__: train: {") == 1  # outputs written by one process
    base, tuned = unet_with_and_without(tiny_models["sd"], root / "models/lora")
    assert torch.isfinite(tuned).all() and (tuned - base).abs().max() > 1e-4
