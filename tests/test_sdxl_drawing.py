"""Drawing with an SDXL base: the app's engine, its A1111 prompts through both text
encoders, a trained SDXL LoRA fused at a strength, PNG parameters naming the family and hash,
a v-prediction zero-terminal-SNR base on its own schedule, and the training's validation
images; all on the tiny SDXL."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw

from kshd.adapters.files import KohyaInfo, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import parse_parameters
from kshd.drawing.request import Request, RequestError
from kshd.prompts.sdxl import PromptEncoderXL, XLEmbeds
from kshd.training.components import load_components
from kshd.training.loop import train_lora

pytestmark = pytest.mark.slow
TRIGGER = "drawn by KSH drawing style"
SMALL = dict(steps=3, width=64, height=64, sampler="euler", positive_prefix="", negative_prefix="")


@pytest.fixture(scope="module")
def sdxl_lora(tiny_models, tmp_path_factory):
    """A LoRA trained on the tiny SDXL, on its UNet and both text encoders."""
    work = tmp_path_factory.mktemp("sdxl-lora")
    images = [Image.new("RGB", (64, 64), (30 * i, 200 - 30 * i, 90)) for i in range(4)]
    features = Features({"image": ImageFeature(), "text": Value("string")})
    texts = [f"an anime girl, tag {i}, {TRIGGER}" for i in range(4)]
    split = Dataset.from_dict({"image": images, "text": texts}, features=features)
    s = defaults("train", resolution=64, batch_size=2, epochs=3, learning_rate=3e-2, rank=4,
                 alpha=4, seed=1, train_text_encoder=True)  # fmt: skip
    c = load_components(str(tiny_models["sdxl"]))
    result = train_lora(c, split, s, cache_dir=work / "cache", keep_tag=TRIGGER)
    info = KohyaInfo(base_model="tiny-sdxl", resolution=64, trigger=TRIGGER, steps=result.steps,
                     epochs=3, batch_size=2, learning_rate=3e-2, num_images=4, seed=1,
                     train_text_encoder=True, sdxl=True)  # fmt: skip
    lora = build_adapter(s.adapter, s.rank, s.alpha)
    save_adapter(work / "lora", lora, info, c.unet, c.text_encoder, c.text_encoder_2)
    return work / "lora"


@pytest.fixture(scope="module")
def settings(tiny_models, sdxl_lora, tmp_path_factory):
    return EngineSettings(
        str(tiny_models["sdxl"]),
        lora=str(sdxl_lora),
        outputs_dir=str(tmp_path_factory.mktemp("outputs")),
        device="cpu",
    )


@pytest.fixture(scope="module")
def engine(settings):
    return Engine(settings)


def _pixels(engine, **kw) -> np.ndarray:
    req = Request(**{"prompt": "an anime girl", **SMALL, **kw})
    return np.stack([np.asarray(im) for im in engine.generate(req, save=False).images])


def test_prompts_go_through_both_encoders_as_sdxls_pipeline_encodes_them(tiny_models):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_models["sdxl"], use_safetensors=True)
    encoder = PromptEncoderXL([pipe.tokenizer, pipe.tokenizer_2],
                              [pipe.text_encoder, pipe.text_encoder_2])  # fmt: skip
    pos, neg = encoder.encode_pair("an anime girl, green eyes", "lowres")
    assert isinstance(pos, XLEmbeds) and pos.hidden.shape == (1, 77, 80)
    theirs = pipe.encode_prompt("an anime girl, green eyes", negative_prompt="lowres",
                                device="cpu", do_classifier_free_guidance=True)  # fmt: skip
    for ours, expected in zip((pos.hidden, neg.hidden, pos.pooled, neg.pooled), theirs,
                              strict=True):  # fmt: skip
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    # A1111's weights and chunks reach both encoders' halves, and the pooled text stays the
    # first chunk's
    weighted = encoder.encode("an anime girl, (green eyes:1.4)")
    assert not torch.allclose(weighted.hidden[..., :32], pos.hidden[..., :32])
    assert not torch.allclose(weighted.hidden[..., 32:], pos.hidden[..., 32:])
    prompt = ", ".join(f"tag {i}" for i in range(60))
    chunks = len(encoder.chunks(prompt))
    long = encoder.encode(prompt)
    assert chunks > 1 and long.hidden.shape[1] == 77 * chunks and long.pooled.shape == (1, 32)


def test_the_engine_draws_an_sdxl_base_with_its_lora_fused(engine, settings):
    assert engine.family == "sdxl"
    base = Engine(replace(settings, lora=None))
    reference = _pixels(base, seed=3)
    full = _pixels(engine, seed=3, lora_scale=1.0)
    assert full.shape == (1, 64, 64, 3)
    assert np.abs(full.astype(int) - reference).mean() > 1  # the LoRA changes the drawing
    assert np.array_equal(_pixels(engine, seed=3, lora_scale=0.0), reference)
    _pixels(engine, seed=3, lora_scale=0.5)  # 1 -> 0.5 -> 1 restores the base exactly
    assert np.array_equal(_pixels(engine, seed=3, lora_scale=1.0), full)


def test_the_fused_sdxl_lora_draws_as_diffusers_draws_it_unfused(engine, settings):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(settings.pretrained, use_safetensors=True)
    pipe.load_lora_weights(settings.lora)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = engine._scheduler("euler")
    out = pipe("an anime girl", negative_prompt="", num_inference_steps=3, width=64, height=64,
               guidance_scale=6.5, generator=torch.Generator().manual_seed(5),
               output_type="np").images  # fmt: skip
    ours = _pixels(engine, seed=5, lora_scale=1.0, cfg_scale=6.5).astype(float) / 255
    assert np.abs(ours[0] - np.asarray(pipe.numpy_to_pil(out)[0]) / 255).max() <= 2 / 255


def test_sdxl_png_parameters_name_the_family_and_the_hash(engine, tmp_path):
    req = Request("a boy, (short hair:1.2)", seed=42, **SMALL)
    done = engine.generate(req, folder=tmp_path)
    params = parse_parameters(done.infotexts[0])
    assert params["Model family"] == "sdxl" and len(params["Model hash"]) == 10
    assert f"<lora:{engine.lora_name}:1>" in params["Prompt"]
    assert Image.open(done.paths[0]).size == (64, 64)


def test_sdxl_image_to_image_draws(engine):
    picture = Image.new("RGB", (64, 64), (200, 120, 40))
    out = _pixels(engine, seed=1, image=picture, strength=0.6)
    assert out.shape == (1, 64, 64, 3) and out.std() > 0


def _sketch() -> Image.Image:
    sketch = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(sketch).ellipse((12, 8, 52, 56), outline="black", width=3)
    return sketch


def test_sketch_to_style_draws_with_an_sdxl_controlnet(settings, tiny_models):
    """The final goal on SDXL: a sketch guides the drawing through an SDXL ControlNet (its
    unit in the PNG parameters); an SD 1.x ControlNet on an SDXL base is refused in one line."""
    nets = {"lineart": str(tiny_models["sdxl-controlnet"]), "canny": str(tiny_models["controlnet"])}
    engine = Engine(replace(settings, control_models=nets))
    plain = _pixels(engine, seed=3)
    sketch = dict(seed=3, control_image=_sketch(), control_type="lineart", preprocessor="invert")
    guided = _pixels(engine, **sketch)
    assert np.abs(guided.astype(int) - plain).mean() > 1  # the lines change the drawing
    assert np.array_equal(_pixels(engine, **sketch, control_weight=0.0), plain)  # weight 0: none
    done = engine.generate(Request("an anime girl", **SMALL, **sketch), save=False)
    assert "Model: sdxl-controlnet" in done.infotexts[0]
    with pytest.raises(RequestError, match=r"generate\.control\.models\.canny.* is an SD 1\.x "
                       r"model and the base is SDXL") as err:  # fmt: skip
        _pixels(engine, seed=3, control_image=_sketch(), control_type="canny")
    assert "\n" not in str(err.value)


def test_sdxl_inpainting_keeps_what_lies_outside_the_mask(engine, tmp_path):
    """The base's own UNet blended at each step (A1111's way for a regular model), on SDXL."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "picture.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 43, 43), fill=255)
    mask.save(tmp_path / "mask.png")
    out = _pixels(engine, seed=2, image=str(tmp_path / "picture.png"),
                  mask=str(tmp_path / "mask.png"), mask_blur=0)[0].astype(int)  # fmt: skip
    inside = np.asarray(mask) == 255
    assert np.array_equal(out[~inside], pixels[~inside])  # untouched, exactly
    assert np.abs(out[inside] - pixels[inside]).mean() > 20  # redrawn


def test_a_zero_terminal_snr_base_draws_on_its_own_schedule(settings):
    vpred = Engine(replace(settings, lora=None, prediction_type="v_prediction",
                           zero_terminal_snr=True, guidance_rescale=0.7))  # fmt: skip
    config = vpred._base_scheduler
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert config.timestep_spacing == "trailing"  # the first step starts from pure noise
    img = _pixels(vpred, seed=2)
    assert np.isfinite(img).all() and img.std() > 0
    # rescaled CFG is applied to such a base: without it the same seed draws otherwise
    vpred.settings = replace(vpred.settings, guidance_rescale=0.0)
    assert not np.array_equal(_pixels(vpred, seed=2), img)


def test_validation_images_draw_the_sdxl_being_trained(tiny_models):
    from kshd.evaluation.sampling import validation_images

    c = load_components(str(tiny_models["sdxl"]))
    images = validation_images(c, "an anime girl", "", (0, 1), 2, 64, positive_prefix="",
                               negative_prefix="", sampler="euler_a")  # fmt: skip
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_the_studio_offers_the_family_s_sizes():
    import gradio as gr

    from kshd.drawing.gui import preset_size
    from kshd.drawing.gui_parts import build_tab

    limits = defaults("generate.limits")
    with gr.Blocks():
        sdxl = build_tab("txt2img", Request("x"), limits, family="sdxl")
        sd1 = build_tab("img2img", Request("x"), limits)
    assert [preset_size(b.value) for b in sdxl.presets] == [(1024, 1024), (832, 1216), (1216, 832)]
    assert [preset_size(b.value) for b in sd1.presets] == [(512, 512), (512, 768), (768, 512)]


def test_a_base_switch_leaves_the_configured_schedule_with_its_own_model():
    from types import SimpleNamespace

    from kshd.drawing.gui_actions import Handlers

    vpred = EngineSettings("Laxhar/noobai-XL-Vpred-1.0", lora="models/lora",
                           prediction_type="v_prediction", zero_terminal_snr=True)  # fmt: skip
    handlers = Handlers(SimpleNamespace(settings=vpred))
    other = handlers._base_settings("models/world/sd")
    assert other.pretrained == "models/world/sd" and other.lora is None
    assert other.prediction_type is None and not other.zero_terminal_snr
    back = handlers._base_settings(vpred.pretrained)
    assert back.prediction_type == "v_prediction" and back.zero_terminal_snr


def test_sdxl_embeddings_load_into_both_encoders_and_sd1_ones_are_named(settings, tmp_path):
    """An SDXL textual inversion (`clip_l` + `clip_g`, as Civitai's SDXL negatives ship) goes
    into each encoder under its name; an SD 1.x one is said to be read as plain text."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    xl = {"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 48, generator=g)}
    save_file(xl, tmp_path / "xl.safetensors")
    save_file({"emb_params": torch.randn(1, 32, generator=g)}, tmp_path / "sd1.safetensors")
    names = (
        ("ksh_neg", str(tmp_path / "xl.safetensors")),
        ("old", str(tmp_path / "sd1.safetensors")),
    )
    engine = Engine(replace(settings, lora=None, embeddings=names))
    [note] = engine.notes
    assert "'old'" in note and "is an SD 1.x embedding and the base is SDXL" in note
    pipe = engine.txt2img
    for key, encoder, tokenizer in (("clip_l", pipe.text_encoder, pipe.tokenizer),
                                    ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)):  # fmt: skip
        rows = encoder.get_input_embeddings().weight
        ids = tokenizer.convert_tokens_to_ids(["ksh_neg", "ksh_neg_1"])
        assert torch.equal(rows[ids], xl[key])
    plain = Engine(replace(settings, lora=None))  # the name read as text
    with_vectors = engine.encoder.encode_pair("an anime girl", "ksh_neg")[1]
    as_text = plain.encoder.encode_pair("an anime girl", "ksh_neg")[1]
    assert not torch.allclose(with_vectors.hidden, as_text.hidden)
