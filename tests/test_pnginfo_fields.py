"""PNG Info: the A1111 `parameters` of a PNG, the app's or AUTOMATIC1111's, read back
into a drawing tab's fields; the app's own text round-trips to the very same text."""

from __future__ import annotations

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.gui_library import png_info
from kshd.drawing.pnginfo import request_fields
from kshd.drawing.request import Request

PREFIX = "(drawn by KSH drawing style : 1.5), "
NEGATIVE_PREFIX = "EasyNegative, (worst quality, low quality:1.4),"
A1111 = (
    "masterpiece, 1girl, (smile:1.2) <lora:foo:0.7>\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
    "Model hash: abc123, Model: anything-v5, Clip skip: 2, Hires upscale: 2, Hires steps: 10"
)


@pytest.fixture(scope="module")
def engine(tiny_models, random_lora, tmp_path_factory):
    return Engine(EngineSettings(str(tiny_models["sd"]), lora=str(random_lora), device="cpu",
                                 outputs_dir=str(tmp_path_factory.mktemp("o")),
                                 limits=defaults("generate.limits")))  # fmt: skip


@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_the_app_s_own_parameters_round_trip_to_the_same_text(engine, kind, tmp_path):
    req = Request("an anime girl, (blonde hair:1.2)", negative_prompt="blurry, text",
                  positive_prefix=PREFIX, negative_prefix=NEGATIVE_PREFIX, sampler="euler_a",
                  steps=17, cfg_scale=6.5, width=320, height=448, lora_scale=0.6)  # fmt: skip
    if kind == "img2img":
        req.image, req.strength = "x.png", 0.45
    text = engine.infotext(req, seed=987654321)
    fields, unused = request_fields(text, PREFIX, NEGATIVE_PREFIX)
    assert unused == []
    # the tag of the LoRA in use stays in the prompt, A1111's way: it sets that LoRA's weight
    assert fields["prompt"] == f"{req.prompt} <lora:ksh_drawing_style:0.6>"
    assert fields["positive_prefix"] == PREFIX
    assert fields["negative_prompt"] == "blurry, text"
    assert fields["negative_prefix"] == NEGATIVE_PREFIX
    assert (fields["seed"], fields["steps"], fields["cfg_scale"]) == (987654321, 17, 6.5)
    assert (fields["width"], fields["height"], fields["sampler"]) == (320, 448, "euler_a")
    assert fields["lora_scale"] == 0.0  # the tags carry every LoRA's weight
    assert fields.get("strength") == (0.45 if kind == "img2img" else None)
    again = Request(**{k: v for k, v in fields.items() if k != "seed"},
                    image=req.image, resize_mode="crop")  # fmt: skip
    assert engine.infotext(again, seed=fields["seed"]) == text


def test_an_a1111_text_fills_what_it_names_and_reports_the_rest():
    fields, unused = request_fields(A1111, PREFIX, NEGATIVE_PREFIX)
    # the tab's prefixes are not in it: they are emptied, so the prompts drawn are the text's
    assert (fields["positive_prefix"], fields["prompt"]) == (
        "", "masterpiece, 1girl, (smile:1.2) <lora:foo:0.7>")  # fmt: skip
    assert (fields["negative_prefix"], fields["negative_prompt"]) == ("", "lowres, bad hands")
    # foo's weight is not the LoRA in use's: the tag stays, for foo alone
    assert fields["lora_scale"] == 0.0 and fields["sampler"] == "dpmpp_2m_karras"
    assert (fields["width"], fields["height"], fields["seed"], fields["cfg_scale"]) == (
        512, 768, 123, 7.0)  # fmt: skip
    assert fields["clip_skip"] == 2  # A1111's Clip skip overrides the base's model.clip_skip
    assert unused == ["Hires upscale", "Hires steps"]
    without_lora, _ = request_fields("a cat\nSteps: 5, Sampler: Euler, Seed: 1", "", "")
    assert without_lora["lora_scale"] == 0.0  # drawn without a LoRA: drawn so again
    assert without_lora["clip_skip"] == 1  # A1111 writes no Clip skip at 1: read so
    far, unused = request_fields("a cat\nSteps: 5, Seed: 1, Clip skip: 3", "", "")
    assert "clip_skip" not in far and unused == ["Clip skip"]  # A1111 goes to 12, the app to 2
    odd, unused = request_fields("a cat\nSteps: 5, Sampler: LMS Karras, Seed: x1", "", "")
    assert "sampler" not in odd and "seed" not in odd and sorted(unused) == ["Sampler", "Seed"]


def test_png_info_reads_an_a1111_file_and_says_what_a_file_lacks(tmp_path):
    info = PngInfo()
    info.add_text("parameters", A1111)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    text, note = png_info(str(tmp_path / "a1111.png"))
    assert text == A1111 and note == "Not used here: Hires upscale, Hires steps."
    Image.new("RGB", (8, 8)).save(tmp_path / "bare.png")
    assert png_info(str(tmp_path / "bare.png"))[1].startswith("This picture holds no")


CONTROLNET = "control_v11p_sd15s2_lineart_anime [0123abcd]"  # as A1111 names a ControlNet


@pytest.mark.parametrize("kind", ["sketch", "inpaint"])
def test_a_sketchs_and_an_inpaintings_parameters_round_trip(engine, kind):
    """The ControlNet unit (its model found among the configured ones by name) and the
    inpainting keys come back as the fields they were written from, and write the same text."""
    from kshd.drawing.control import unit_infotext
    from kshd.drawing.modes.sketch import Guided

    models = {"lineart_anime": "lllyasviel/control_v11p_sd15s2_lineart_anime", "canny": "x/y"}
    req = Request("a girl", positive_prefix="", negative_prefix="", steps=9, width=64,
                  height=64, lora_scale=1.0)  # fmt: skip
    given = None  # what the sketch mode read: its unit as A1111 writes it
    if kind == "sketch":
        req.control_image, req.control_type, req.preprocessor = "s.png", "lineart_anime", "invert"
        req.control_weight, req.guidance_start, req.guidance_end = 0.8, 0.1, 0.9
        req.control_mode, req.resize_mode = "prompt", "fill"
        given = Guided(unit=unit_infotext(req, "invert", CONTROLNET))
    else:
        req.image, req.mask, req.strength = "p.png", "m.png", 0.7
        req.mask_blur, req.inpaint_area, req.inpaint_padding = 6, "only_masked", 40
    text = engine.infotext(req, seed=5, given=given)
    fields, unused = request_fields(text, "", "", models)
    assert unused == []
    names = (("control_type", "preprocessor", "control_weight", "guidance_start", "guidance_end",
              "control_mode", "resize_mode") if kind == "sketch"
             else ("strength", "mask_blur", "inpaint_area", "inpaint_padding"))  # fmt: skip
    assert {n: fields[n] for n in names} == {n: getattr(req, n) for n in names}
    again = Request(**{k: v for k, v in fields.items() if k != "seed"},
                    control_image=req.control_image, image=req.image, mask=req.mask)  # fmt: skip
    if kind == "sketch":
        given = Guided(unit=unit_infotext(again, again.preprocessor, CONTROLNET))
    assert engine.infotext(again, seed=fields["seed"], given=given) == text
    _, unused = request_fields(text, "", "", {})  # a model not configured here is said
    assert unused == (
        ["ControlNet model control_v11p_sd15s2_lineart_anime"] if kind == "sketch" else []
    )
