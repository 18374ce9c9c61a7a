"""Evaluation: fixed seeds reproduce, a zero-strength LoRA changes nothing, grids are laid out."""

from __future__ import annotations

import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from kshd.evaluation import EvalSettings, evaluate_lora, grid, mean_abs_difference

from .test_training import trained  # noqa: F401  (module fixture: a LoRA trained once)


def test_grid_and_difference():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    g = grid([[red, blue, red], [blue, red, blue]])
    assert g.size == (24, 16) and g.getpixel((9, 1)) == (0, 0, 255)
    assert mean_abs_difference([[red]], [[red]]) == 0.0
    assert mean_abs_difference([[red]], [[blue]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("scale", "changed"), [(1.0, True), (0.0, False)])
def test_evaluate_lora(trained, tiny_models, tmp_path, scale, changed):  # noqa: F811
    lora_dir, _, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    s = EvalSettings(
        prompts=("drawn by KSH drawing style, a girl", "a boy"),
        seeds=(0, 1),
        num_inference_steps=2,
        resolution=64,
        lora_scale=scale,
    )
    metrics = evaluate_lora(pipe, lora_dir, s, tmp_path)
    assert metrics["num_images"] == 4
    assert (metrics["lora_pixel_delta"] > 0) == changed
    grids = sorted((tmp_path / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["prompt-00.png", "prompt-01.png"]
    assert Image.open(grids[0]).size == (128, 128)  # rows base | LoRA, columns = seeds
