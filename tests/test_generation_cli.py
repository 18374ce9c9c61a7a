"""`kshd generate` / `kshd img2img` from the shell: files with parameters, clear errors.

The command runs in the test's process (kshd.cli.main, its exit code and what it said).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kshd.drawing.pnginfo import parse_parameters, read_parameters

from .conftest import ROOT
from .helpers.inprocess import Ran, kshd_here


@pytest.fixture
def kshd(capsys, monkeypatch):
    """`kshd *args` with the tiny SD and `lora`, offline, in the checkout's root."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(*args: str, tiny_models, lora) -> Ran:
        overrides = [
            f"model.pretrained={tiny_models['sd']}",
            f"generate.lora={lora}",
            "generate.device=cpu",
        ]
        return kshd_here([*args, *overrides], capsys, cwd=ROOT)

    return run


def test_generate_and_img2img_write_pngs_with_parameters(kshd, tmp_path, tiny_models, random_lora):
    out = tmp_path / "out"
    common = ["--steps", "2", "--width", "64", "--height", "64", "--out", str(out)]
    run = kshd(
        "generate", "--prompt", "a girl", "--seed", "9", "--batch-size", "2",
        "--lora-scale", "0.5", *common, tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["00000-9.png", "00001-10.png"]
    info = parse_parameters(read_parameters(out / "00001-10.png"))
    assert info["Seed"] == "10" and info["Prompt"].endswith("a girl <lora:ksh_drawing_style:0.5>")
    assert info["Prompt"].startswith("(drawn by KSH drawing style : 1.5), ")  # config's prefix
    assert info["Negative prompt"].startswith("EasyNegative, (worst quality, low quality:1.4)")
    assert "00001-10.png  seed 10" in run.stderr and "txt2img: 100%" in run.stderr  # log, bar

    picture = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), "navy").save(picture)
    run = kshd(
        "img2img", "--image", str(picture), "--prompt", "a girl", "--seed", "3",
        "--strength", "0.5", *common, tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    info = parse_parameters(read_parameters(out / "00002-3.png"))
    assert info["Denoising strength"] == "0.5" and info["Size"] == "64x64"


def test_bad_values_and_missing_files_fail_with_a_message(kshd, tmp_path, tiny_models, random_lora):
    run = kshd(
        "generate", "--prompt", "a", "--width", "100", "--out", str(tmp_path),
        tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 2 and "width: 100 is not a multiple of 8" in run.stderr
    run = kshd(
        "img2img", "--prompt", "a", "--image", str(tmp_path / "nope.png"),
        tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 2 and "image: nope.png: unreadable" in run.stderr
    run = kshd(
        "generate", "--prompt", "a", "--lora", str(tmp_path / "missing.safetensors"),
        tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 2 and "missing.safetensors" in run.stderr
    assert not list(tmp_path.glob("*.png"))


def test_sketch_draws_with_the_controlnet_and_writes_its_control_image(
    kshd, tmp_path, tiny_models, random_lora
):
    sketch = tmp_path / "sketch.png"
    img = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(img).ellipse((16, 12, 80, 84), outline="black", width=3)
    img.save(sketch)
    out, lines = tmp_path / "out", tmp_path / "lines.png"
    controls = [f"generate.control.models.lineart={tiny_models['controlnet']}",
                "generate.control.type=lineart"]  # fmt: skip
    run = kshd(
        "sketch", "--image", str(sketch), "--prompt", "a girl", "--seed", "2", "--steps", "2",
        "--width", "64", "--height", "64", "--preprocessor", "invert", "--control-weight", "0.8",
        "--out", str(out), "--control-out", str(lines), *controls,
        tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    unit = parse_parameters(read_parameters(out / "00000-2.png"))["ControlNet 0"]
    assert unit.startswith("Module: invert, Model: controlnet [") and "Weight: 0.8" in unit
    drawn = np.asarray(Image.open(lines).convert("L"))
    assert drawn.shape == (64, 64) and drawn[0, 0] == 0 and (drawn == 255).sum() > 50  # lines
    assert "sketch: 100%" in run.stderr
    # a control type whose ControlNet is neither here nor reachable: one line, the way out
    run = kshd("sketch", "--image", str(sketch), "--prompt", "a girl", "--control", "canny",
                "--steps", "2", tiny_models=tiny_models, lora=random_lora)  # fmt: skip
    assert run.returncode == 2
    assert "control_type: config key `generate.control.models.canny`" in run.stderr
    assert "Traceback" not in run.stderr


def test_inpaint_redraws_the_mask_and_keeps_the_rest(kshd, tmp_path, tiny_models, random_lora):
    picture, mask, out = tmp_path / "picture.png", tmp_path / "mask.png", tmp_path / "out"
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(picture)
    white = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(white).rectangle((16, 16, 47, 47), fill=255)
    white.save(mask)
    run = kshd(
        "inpaint", "--image", str(picture), "--mask", str(mask), "--prompt", "a girl",
        "--seed", "5", "--steps", "2", "--width", "64", "--height", "64", "--strength", "1",
        "--mask-blur", "0", "--out", str(out), tiny_models=tiny_models, lora=random_lora,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    drawn = np.asarray(Image.open(out / "00000-5.png").convert("RGB"))
    assert np.array_equal(drawn[:16], pixels[:16]) and np.array_equal(drawn[:, 48:], pixels[:, 48:])
    assert (drawn[16:48, 16:48] != pixels[16:48, 16:48]).any()
    params = parse_parameters(read_parameters(out / "00000-5.png"))
    assert params["Mask blur"] == "0" and params["Inpaint area"] == "Whole picture"
    assert "inpaint: 100%" in run.stderr
    run = kshd("inpaint", "--image", str(picture), "--mask", str(tmp_path / "none.png"),
                "--prompt", "a", tiny_models=tiny_models, lora=random_lora)  # fmt: skip
    assert run.returncode == 2 and "mask: none.png: " in run.stderr
