"""Sketch to style through ControlNet, on the tiny SD and its tiny ControlNet (built
from its UNet by `ControlNetModel.from_unet`, loaded through `from_pretrained`): the control
changes the drawing and weight 0 is no control at all, the guidance range is kept step by step,
A1111's control modes, image-to-image with a control, and the PNG parameters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.modes.registry import mode_of
from kshd.drawing.pnginfo import parse_parameters, read_parameters
from kshd.drawing.request import Request, RequestError

pytestmark = pytest.mark.slow
STEPS = 8
DRAW = dict(steps=STEPS, width=64, height=64, sampler="euler", seed=4, positive_prefix="",
            negative_prefix="", batch_size=1, batch_count=1)  # fmt: skip


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory) -> Engine:
    settings = EngineSettings(
        str(tiny_models["sd"]), device="cpu", limits=defaults("generate.limits"),
        outputs_dir=str(tmp_path_factory.mktemp("sketch_outputs")),
        control_models={"lineart": str(tiny_models["controlnet"])},
    )  # fmt: skip
    return Engine(settings)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> str:
    """A face drawn in black lines on white, as a user's clean line art."""
    img = Image.new("RGB", (96, 96), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((16, 12, 80, 84), outline="black", width=3)
    d.line((36, 40, 44, 40), fill="black", width=3)
    d.line((52, 40, 60, 40), fill="black", width=3)
    path = tmp_path_factory.mktemp("sketch") / "face.png"
    img.save(path)
    return str(path)


def _draw(engine: Engine, **changes) -> tuple[np.ndarray, str]:
    out = engine.generate(Request("a girl", **{**DRAW, **changes}), save=False)
    return np.asarray(out.images[0], dtype=np.int16), out.infotexts[0]


def _control(sketch: str, **changes) -> dict:
    return {"control_image": sketch, "control_type": "lineart", "preprocessor": "invert",
            "control_weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0,
            "control_mode": "balanced", **changes}  # fmt: skip


def test_the_control_changes_the_drawing_and_weight_0_is_none(engine, sketch):
    plain, _ = _draw(engine)
    guided, info = _draw(engine, **_control(sketch))
    assert np.abs(guided - plain).mean() > 1  # the sketch guided it
    unguided, _ = _draw(engine, **_control(sketch, control_weight=0.0))
    assert np.array_equal(unguided, plain)  # weight 0: bit for bit the drawing without it
    again, _ = _draw(engine, **_control(sketch))
    assert np.array_equal(again, guided)  # the ControlNet pipelines are kept, not rebuilt
    controls = engine.mode("sketch").controls
    assert controls.pipelines("lineart")[0].unet is engine.txt2img.unet  # shared


def test_the_guidance_range_is_kept_step_by_step(engine, sketch):
    """The ControlNet's scale at each step (its forward's `conditioning_scale`)."""
    net = engine.mode("sketch").controls.pipelines("lineart")[0].controlnet
    seen: list[float] = []
    hook = net.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(float(kwargs["conditioning_scale"])), with_kwargs=True
    )
    try:
        _draw(engine, cfg_scale=1.0, **_control(sketch, control_weight=0.5, guidance_start=0.25,
                                                 guidance_end=0.75))  # fmt: skip
    finally:
        hook.remove()
    assert seen == [0, 0, 0.5, 0.5, 0.5, 0.5, 0, 0]  # steps 3 to 6 of 8 only


def test_a1111s_control_modes_each_draw_their_own_way(engine, sketch):
    net = engine.mode("sketch").controls.pipelines("lineart")[0].controlnet
    drawn = {m: _draw(engine, **_control(sketch, control_mode=m))[0]
             for m in ("balanced", "prompt", "control")}  # fmt: skip
    assert not np.array_equal(drawn["balanced"], drawn["prompt"])
    assert not np.array_equal(drawn["balanced"], drawn["control"])
    assert "forward" not in vars(net)  # the soft injection is undone after the drawing


def test_soft_injection_weights_the_residuals_as_a1111():
    import torch

    from kshd.drawing.control import SOFT, soft_injection

    class Net(torch.nn.Module):
        def forward(self, x):
            return [x, x, x], x

    net, one = Net(), torch.ones(1)
    with soft_injection(net, on=True):
        down, mid = net(one)
    assert [float(d) for d in down] == pytest.approx([SOFT**3, SOFT**2, SOFT])
    assert float(mid) == 1.0 and net(one)[0][0] is one  # and undone


def test_image_to_image_with_a_control_and_the_parameters_say_so(engine, sketch, tmp_path):
    picture = tmp_path / "colours.png"
    Image.new("RGB", (64, 64), (200, 120, 90)).save(picture)
    out = engine.generate(
        Request("a girl", **DRAW, image=str(picture), strength=0.75, **_control(sketch)),
        folder=tmp_path / "out",
    )
    params = parse_parameters(read_parameters(out.paths[0]))
    assert params["Denoising strength"] == "0.75"
    unit = params["ControlNet 0"]
    assert unit.startswith("Module: invert, Model: controlnet [") and "Weight: 1" in unit
    assert "Resize Mode: Crop and Resize" in unit and "Control Mode: Balanced" in unit
    assert "Guidance Start: 0, Guidance End: 1" in unit
    plain = engine.generate(
        Request("a girl", **DRAW, image=str(picture), strength=0.75), save=False
    )
    assert np.abs(np.asarray(out.images[0], dtype=np.int16) -
                  np.asarray(plain.images[0], dtype=np.int16)).mean() > 1  # fmt: skip


def test_sketches_are_saved_apart_and_bad_units_are_named(engine, sketch):
    req = Request("a girl", **DRAW, **_control(sketch))
    assert mode_of(req).name == "sketch"
    out = engine.generate(req)
    assert out.paths[0].parent.parent.name == "sketch"
    with pytest.raises(RequestError, match="control_type: 'canny' has no ControlNet"):
        _draw(engine, **_control(sketch, control_type="canny"))
    with pytest.raises(RequestError, match="guidance_end: 0.2 is before guidance_start 0.5"):
        _draw(engine, **_control(sketch, guidance_start=0.5, guidance_end=0.2))
    with pytest.raises(RequestError, match="control_weight: 3"):
        _draw(engine, **_control(sketch, control_weight=3.0))
    with pytest.raises(RequestError, match="control_mode: 'strong'"):
        _draw(engine, **_control(sketch, control_mode="strong"))
    with pytest.raises(RequestError, match="^control_image: nothing.png"):
        _draw(engine, **_control("nothing.png"))


def test_a_half_precision_run_loads_a_controlnet_s_fp16_variant_where_it_has_one(
    tiny_models, tmp_path
):
    """A ControlNet folder (as its Hub repo) with both files: an fp16 or bf16 run reads the
    fp16 file (an SDXL ControlNet's 2.5 GB instead of 5) and names its hash; an fp32 run reads
    the full file, and a repo without the variant is read whole in any precision; the base it
    shares its parts with stays in the run's precision."""
    import hashlib
    import shutil

    import torch
    from diffusers import ControlNetModel, StableDiffusionXLPipeline

    from kshd.drawing.control import ControlNets

    full_only, both = tmp_path / "full-only", tmp_path / "both"
    shutil.copytree(tiny_models["sdxl-controlnet"], full_only)
    shutil.copytree(full_only, both)
    net = ControlNetModel.from_pretrained(both)
    with torch.no_grad():
        net.conv_in.weight += 1.0  # tells the two files apart
    net.half().save_pretrained(both, variant="fp16")
    fp16_file = both / "diffusion_pytorch_model.fp16.safetensors"
    full = ControlNetModel.from_pretrained(full_only).conv_in.weight
    base = StableDiffusionXLPipeline.from_pretrained(tiny_models["sdxl"])
    for folder, dtype, wanted in [
        (both, torch.float16, net.conv_in.weight),
        (both, torch.bfloat16, net.conv_in.weight),
        (both, torch.float32, full),
        (full_only, torch.float16, full),
    ]:
        base.to(dtype=dtype)  # the engine's base is in the run's precision too
        nets = ControlNets({"lineart": str(folder)}, base, torch.device("cpu"), dtype)
        txt2img, _, name = nets.pipelines("lineart")
        got = txt2img.controlnet.conv_in.weight
        assert got.dtype == base.unet.dtype == dtype  # the shared base is not cast to fp32
        assert torch.equal(got, wanted.to(dtype)), (folder.name, dtype)
        if folder == both and dtype != torch.float32:
            assert name == f"both [{hashlib.sha256(fp16_file.read_bytes()).hexdigest()[:8]}]"
