"""The demo pipeline on an SDXL base, as a user runs it:
`dvc exp run -S +experiment=demo -S model=tiny_sdxl` in a fresh git repository, offline wandb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from kshd.adapters.files import KOHYA_FILE

from .conftest import quick_dvc_params
from .helpers.dvc_repo import clone_of_this_checkout, dvc_env, link_tiny_models

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def sdxl_run(tmp_path_factory, tiny_models):
    repo = clone_of_this_checkout(tmp_path_factory.mktemp("sdxl"))
    link_tiny_models(repo, tiny_models)  # the SDXL among them, as `make demo` builds them
    dvc = str(Path(sys.executable).with_name("dvc"))
    cmd = [dvc, "exp", "run", "-S", "+experiment=demo", "-S", "model=tiny_sdxl",
           "-S", "evaluate.sketch.controlnet=models/tiny/sdxl-controlnet",  # an SDXL one
           *quick_dvc_params()]  # fmt: skip
    env = dvc_env() | {"WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return repo, proc.stdout + proc.stderr


def test_the_demo_trains_and_evaluates_an_sdxl_lora_end_to_end(sdxl_run):
    repo, _ = sdxl_run
    train = json.loads((repo / "reports/train/metrics.json").read_text(encoding="utf-8"))
    assert train["steps"] > 0 and np.isfinite(train["final_loss"])
    assert sorted(p.name for p in (repo / "reports/validation").glob("*.png"))  # drawn in SDXL
    metrics = json.loads((repo / "reports/metrics.json").read_text(encoding="utf-8"))
    assert metrics["model_family"] == "sdxl" and isinstance(metrics["style_gain"], float)
    # the final goal on SDXL: the held-out drawings' lines redrawn through an SDXL ControlNet
    assert metrics["sketch_drawings"] > 0 and isinstance(metrics["sketch_structure"], float)
    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    assert "base model family: SDXL" in page
    with safe_open(repo / "models/lora" / KOHYA_FILE, "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
        assert all(k.startswith("lora_unet_") for k in f.keys())  # noqa: SIM118 (no te LoRA)


def test_the_sdxl_lora_loads_into_diffusers_sdxl_pipeline(sdxl_run):
    from diffusers import StableDiffusionXLPipeline

    repo, _ = sdxl_run
    pipe = StableDiffusionXLPipeline.from_pretrained(repo / "models/tiny/sdxl")
    pipe.set_progress_bar_config(disable=True)

    def draw():
        return pipe("an anime girl, drawn by KSH drawing style", num_inference_steps=2,
                    height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip

    base = draw()
    pipe.load_lora_weights(repo / "models/lora")
    assert np.abs(draw() - base).mean() > 1e-4
