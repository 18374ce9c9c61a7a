"""SD 1.5's shapes, not the tiny model's: a few LoRA steps and one drawing at 64 px.

Random weights (nothing downloaded); the text encoder is CLIP-L wide but two layers deep to stay
quick. fp32 only: half-precision convolutions of this size are far too slow on this CPU, and
`make gpu-check` runs fp16 and bf16 at 512 px where a GPU is lent.
"""

from __future__ import annotations

import json

import pytest

from kshd.config.compose import defaults

from .conftest import ROOT
from .helpers.settings import assert_trains_and_draws


@pytest.mark.slow
@pytest.mark.xdist_group("memory")  # SD 1.5's shapes: ~5 GB
def test_sd15_shaped_pipeline_trains_and_draws(tiny_models, sample_split, tmp_path):
    from transformers import CLIPTokenizer

    from kshd_world.sd15_shaped import sd15_shaped_components

    tokenizer = CLIPTokenizer.from_pretrained(tiny_models["sd"], subfolder="tokenizer")
    c = sd15_shaped_components(tokenizer, seed=0, text_layers=2)
    assert c.unet.config.cross_attention_dim == c.text_encoder.config.hidden_size == 768
    s = defaults(
        "train",
        resolution=64,
        center_crop=True,
        batch_size=1,
        max_train_steps=2,
        learning_rate=1e-4,
        gradient_checkpointing=True,
        seed=1,
    )
    # drawn as validation draws (the app's prompt encoding and sampler) through SD 1.5's shapes
    assert_trains_and_draws(c, sample_split.select(range(2)), s, tmp_path, 64, draw_steps=2)


@pytest.mark.slow
@pytest.mark.parametrize("family", [[], ["--sdxl"]], ids=["sd1", "sdxl"])
def test_gpu_check_runs_small_on_the_cpu(tmp_path, family):
    """`make gpu-check`'s script end to end with --small (the tiny SD, or the tiny SDXL for
    `make gpu-check SDXL=1`): every run reports its figures."""
    import importlib.util

    from accelerate.state import AcceleratorState

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    try:
        rows = gpu_check.main(["--small", *family, "--json", str(tmp_path / "figures.json")])
    finally:
        AcceleratorState._reset_state()  # the next test's Accelerator picks its own precision
    runs = [r["run"] for r in rows]
    assert runs == [
        "train bf16 checkpointing=off",
        "train bf16 checkpointing=on",
        "resume bf16 from step 1",
        "draw unfused",
        "draw fused",
    ]
    assert rows[2]["resumed_from"] == "checkpoint-1" and rows[2]["max_lora_diff"] == 0.0
    assert all(r["peak_mb"] > 0 for r in rows) and rows[3]["images_per_s"] > 0
    assert json.loads((tmp_path / "figures.json").read_text()) == rows
