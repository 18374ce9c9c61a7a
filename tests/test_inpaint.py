"""Inpainting on the tiny SD, a regular 4-channel model as A1111 inpaints with one:
what lies outside the blurred mask is the picture's own pixels, bit for bit; inside it is
redrawn; "only masked" draws the mask's region and pastes it into the picture at its own size;
A1111's parameters; bad masks named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import parse_parameters, read_parameters
from kshd.drawing.request import Request, RequestError

pytestmark = pytest.mark.slow
DRAW = dict(steps=4, width=64, height=64, sampler="euler", seed=4, positive_prefix="",
            negative_prefix="", batch_size=1, batch_count=1, strength=1.0)  # fmt: skip


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory) -> Engine:
    out = tmp_path_factory.mktemp("inpaint_outputs")
    return Engine(EngineSettings(str(tiny_models["sd"]), device="cpu", outputs_dir=str(out),
                                 limits=defaults("generate.limits")))  # fmt: skip


def _picture(size: tuple[int, int], path) -> np.ndarray:
    """A picture with detail everywhere (a VAE round trip would change every pixel of it)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels.astype(np.int16)


def _mask(size: tuple[int, int], box: tuple[int, int, int, int], path) -> None:
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).rectangle(box, fill=255)
    img.save(path)


def _blurred(size, box, blur: int) -> np.ndarray:
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).rectangle(box, fill=255)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(blur)))


def test_outside_the_blurred_mask_the_pictures_pixels_stay(engine, tmp_path):
    size, box = (64, 64), (20, 20, 43, 43)
    pixels = _picture(size, tmp_path / "picture.png")
    _mask(size, box, tmp_path / "mask.png")
    out = engine.generate(Request("a girl", **DRAW, image=str(tmp_path / "picture.png"),
                                  mask=str(tmp_path / "mask.png"), mask_blur=4))  # fmt: skip
    drawn = np.asarray(out.images[0], dtype=np.int16)
    feather = _blurred(size, box, 4)
    assert (feather == 0).sum() > 2000  # most of the picture is unmasked
    assert np.array_equal(drawn[feather == 0], pixels[feather == 0])  # untouched, exactly
    inside = feather == 255
    assert np.abs(drawn[inside] - pixels[inside]).mean() > 20  # redrawn
    params = parse_parameters(read_parameters(out.paths[0]))
    assert params["Mask blur"] == "4" and params["Inpaint area"] == "Whole picture"
    assert out.paths[0].parent.parent.name == "inpaint"


def test_only_masked_draws_the_region_and_keeps_the_pictures_size(engine, tmp_path):
    size, box = (160, 120), (100, 40, 123, 63)  # a small mask on a larger picture
    pixels = _picture(size, tmp_path / "big.png")
    _mask(size, box, tmp_path / "mask.png")
    out = engine.generate(Request("a girl", **DRAW, image=str(tmp_path / "big.png"),
                                  mask=str(tmp_path / "mask.png"), mask_blur=2,
                                  inpaint_area="only_masked", inpaint_padding=8),
                          folder=tmp_path / "out")  # fmt: skip
    drawn = np.asarray(out.images[0], dtype=np.int16)
    assert drawn.shape == (120, 160, 3)  # the picture's own size, not the drawing's 64
    feather = _blurred(size, box, 2)
    assert np.array_equal(drawn[feather == 0], pixels[feather == 0])
    assert np.abs(drawn[feather == 255] - pixels[feather == 255]).mean() > 20
    params = parse_parameters(read_parameters(out.paths[0]))
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "8"


def test_a_transparent_mask_counts_its_strokes(engine, tmp_path):
    """Strokes painted on a transparent layer (a GUI's brush) mask where they are painted."""
    size = (64, 64)
    pixels = _picture(size, tmp_path / "picture.png")
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((24, 24, 39, 39), fill=(255, 0, 0, 255))  # a red stroke
    layer.save(tmp_path / "strokes.png")
    req = Request("a girl", **DRAW, image=str(tmp_path / "picture.png"),
                  mask=str(tmp_path / "strokes.png"), mask_blur=0)  # fmt: skip
    out = engine.generate(req, save=False)
    drawn = np.asarray(out.images[0], dtype=np.int16)
    outside = np.ones(size, bool)
    outside[24:40, 24:40] = False
    assert np.array_equal(drawn[outside], pixels[outside])
    assert np.abs(drawn[~outside] - pixels[~outside]).mean() > 20


def test_bad_masks_are_named(engine, tmp_path):
    _picture((64, 64), tmp_path / "picture.png")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    (tmp_path / "notes.txt").write_text("not a mask")
    picture = str(tmp_path / "picture.png")
    with pytest.raises(RequestError, match="^mask: nothing is masked"):
        engine.generate(Request("a", **DRAW, image=picture, mask=str(tmp_path / "black.png")))
    with pytest.raises(RequestError, match="^mask: notes.txt: "):
        engine.generate(Request("a", **DRAW, image=picture, mask=str(tmp_path / "notes.txt")))
    with pytest.raises(RequestError, match="^image: inpainting needs the picture"):
        engine.generate(Request("a", **DRAW, mask=str(tmp_path / "black.png")))
    with pytest.raises(RequestError, match="^inpaint_area: 'edges'"):
        engine.generate(Request("a", **DRAW, image=picture, mask=str(tmp_path / "black.png"),
                                inpaint_area="edges"))  # fmt: skip


def test_a_configured_9_channel_inpainting_model_draws_with_the_lora(
    tiny_models, random_lora, tmp_path
):
    """`generate.inpaint.model`: the inpainting model's UNet takes the mask and the masked
    picture (9 channels), the LoRA is loaded into it and follows its strength; the unmasked
    pixels are still the picture's. A 4-channel model there is refused by its key."""
    size, box = (64, 64), (20, 20, 43, 43)
    pixels = _picture(size, tmp_path / "picture.png")
    _mask(size, box, tmp_path / "mask.png")
    settings = dict(device="cpu", outputs_dir=str(tmp_path), limits=defaults("generate.limits"),
                    lora=str(random_lora))  # fmt: skip
    inpainting = str(tiny_models["sd-inpaint"])
    engine = Engine(EngineSettings(str(tiny_models["sd"]), inpaint_model=inpainting, **settings))
    req = dict(image=str(tmp_path / "picture.png"), mask=str(tmp_path / "mask.png"), mask_blur=0)

    def draw(lora_scale: float) -> np.ndarray:
        out = engine.generate(Request("a girl", **{**DRAW, "lora_scale": lora_scale}, **req),
                              save=False)  # fmt: skip
        return np.asarray(out.images[0], dtype=np.int16)

    with_lora, without = draw(1.0), draw(0.0)
    assert engine.mode("inpaint").pipe.unet.config.in_channels == 9
    assert engine.mode("inpaint").pipe.unet is not engine.txt2img.unet
    outside = np.ones(size, bool)
    outside[20:44, 20:44] = False
    assert np.array_equal(with_lora[outside], pixels[outside])
    assert np.abs(with_lora[~outside] - without[~outside]).mean() > 1  # the LoRA is in it
    assert np.array_equal(draw(1.0), with_lora)
    plain = Engine(EngineSettings(str(tiny_models["sd"]), inpaint_model=str(tiny_models["sd"]),
                                  **settings))  # fmt: skip
    with pytest.raises(RequestError, match=r"generate\.inpaint\.model` = .* 4-channel UNet"):
        plain.generate(Request("a", **DRAW, **req), save=False)


@pytest.mark.parametrize("own_model", [False, True])
def test_the_inpainting_pipeline_keeps_a_half_precision_base_in_half(tiny_models, own_model):
    """A GPU draws in fp16: making the inpainting pipeline from the base's parts leaves the base
    (and the inpainting model's UNet) in fp16, where diffusers' from_pipe would cast them all to
    fp32 (twice the memory, for every mode drawn after it)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from kshd.drawing.inpaint import inpaint_pipeline

    base = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], dtype=torch.float16)
    model = str(tiny_models["sd-inpaint"]) if own_model else None
    pipe = inpaint_pipeline(base, model, None)
    assert base.unet.dtype == base.vae.dtype == base.text_encoder.dtype == torch.float16
    assert pipe.unet.dtype == torch.float16
