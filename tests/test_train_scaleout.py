"""The train stage unchanged under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import pytest
import torch

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
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    g = torch.Generator().manual_seed(0)
    latents, hidden = torch.randn(1, 4, 32, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        base = pipe.unet(latents, 500, encoder_hidden_states=hidden).sample
        pipe.load_lora_weights(str(root / "models/lora"))
        tuned = pipe.unet(latents, 500, encoder_hidden_states=hidden).sample
    assert torch.isfinite(tuned).all() and (tuned - base).abs().max() > 1e-4
