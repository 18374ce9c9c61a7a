"""The drawing engine: seeds, LoRA strength, prompts, samplers, PNG parameters, bad requests."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from kshd.adapters.files import KOHYA_FILE
from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import lora_hash, parse_parameters, read_parameters, save_png
from kshd.drawing.request import SAMPLERS, Request, RequestError

# drawn without the app's prefixes, so a plain diffusers pipeline can draw the same
SMALL = dict(steps=3, width=64, height=64, sampler="euler", positive_prefix="", negative_prefix="")


@pytest.fixture(scope="module")
def settings(tiny_models, random_lora, tmp_path_factory):
    return EngineSettings(
        str(tiny_models["sd"]),
        lora=str(random_lora),
        outputs_dir=str(tmp_path_factory.mktemp("outputs")),
        device="cpu",
        limits=defaults("generate.limits", max_upload_pixels=1_000_000, max_side=512),
    )


@pytest.fixture(scope="module")
def engine(settings):
    return Engine(settings)


@pytest.fixture(scope="module")
def base(settings):
    return Engine(replace(settings, lora=None))


def _pixels(engine, **kw) -> np.ndarray:
    req = Request(**{"prompt": "an anime girl", **SMALL, **kw})
    return np.stack([np.asarray(im) for im in engine.generate(req, save=False).images])


def test_same_seed_same_image_and_seeds_are_reported(engine):
    a, b = _pixels(engine, seed=11), _pixels(engine, seed=11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _pixels(engine, seed=12))
    result = engine.generate(Request("an anime girl", seed=-1, batch_size=2, **SMALL), save=False)
    first = result.seeds[0]
    assert result.seeds == [first, first + 1] and 0 <= first < 2**32
    again = _pixels(engine, seed=first, batch_size=2)  # the reported seed redraws the images
    assert np.array_equal(again, np.stack([np.asarray(i) for i in result.images]))


def test_batches_use_consecutive_seeds_and_report_progress(engine):
    seen = []
    req = Request("a girl", seed=100, batch_count=2, batch_size=2, **SMALL)
    result = engine.generate(req, lambda done, total: seen.append((done, total)), save=False)
    assert result.seeds == [100, 101, 102, 103] and len(result.images) == 4
    assert [d for d, _ in seen] == list(range(1, 7)) and {t for _, t in seen} == {6}
    # image i of a batch is the same seed drawn alone (up to batched float rounding)
    alone = _pixels(engine, seed=103, prompt="a girl")[0].astype(int)
    assert np.abs(np.asarray(result.images[3]).astype(int) - alone).max() <= 2


def test_lora_strength_zero_is_the_base_model_exactly(engine, base):
    reference = _pixels(base, seed=3)
    full = _pixels(engine, seed=3, lora_scale=1.0)
    assert np.abs(full.astype(int) - reference).mean() > 1  # the LoRA does change the picture
    assert np.array_equal(_pixels(engine, seed=3, lora_scale=0.0), reference)
    # switching strengths restores the base weights exactly: 1 -> 0.5 -> 1 gives the same image
    _pixels(engine, seed=3, lora_scale=0.5)
    assert np.array_equal(_pixels(engine, seed=3, lora_scale=1.0), full)
    assert np.array_equal(_pixels(engine, seed=3, lora_scale=0.0), reference)


def test_fused_equals_the_unfused_lora(engine, settings):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(settings.pretrained, safety_checker=None)
    pipe.load_lora_weights(settings.lora)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = engine._scheduler("euler")
    pos, neg = engine.encoder.encode_pair("an anime girl", "")
    out = pipe(
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        num_inference_steps=3,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(5),
        cross_attention_kwargs={"scale": 0.7},
        output_type="np",
    ).images
    fused = _pixels(engine, seed=5, lora_scale=0.7, sampler="euler").astype(float) / 255
    unfused = np.asarray(pipe.numpy_to_pil(out)[0]).astype(float) / 255
    assert np.abs(fused - unfused).max() <= 2 / 255


def test_kohya_file_draws_like_the_diffusers_file(settings, engine, random_lora):
    kohya = Engine(replace(settings, lora=str(random_lora / KOHYA_FILE)))
    a = _pixels(kohya, seed=4).astype(int)
    assert np.abs(a - _pixels(engine, seed=4)).max() <= 1
    assert kohya.lora_name == "ksh_drawing_style"


def test_long_prompts_count_past_77_tokens(engine):
    words = [f"w{i % 10}" for i in range(150)]
    assert len(engine.encoder._tokenize(" ".join(words))) > 77
    changed = [*words[:-1], "zzz"]
    a = _pixels(engine, seed=1, negative_prompt=" ".join(words))
    assert not np.array_equal(a, _pixels(engine, seed=1, negative_prompt=" ".join(changed)))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_draws(engine, sampler):
    img = _pixels(engine, seed=2, sampler=sampler)
    assert img.shape == (1, 64, 64, 3) and img.std() > 0


def test_png_parameters_round_trip(engine):
    req = Request(
        "a boy, (short hair:1.2)",
        negative_prompt="lowres",
        seed=42,
        cfg_scale=6.5,
        lora_scale=0.8,
        **{
            **SMALL,
            "sampler": "dpmpp_2m_karras",
            "positive_prefix": "(drawn by KSH drawing style : 1.5), ",
            "negative_prefix": "EasyNegative,",
        },
    )
    path = engine.generate(req).paths[0]
    info = parse_parameters(read_parameters(path))
    assert info["Prompt"] == (
        "(drawn by KSH drawing style : 1.5), a boy, (short hair:1.2) <lora:ksh_drawing_style:0.8>"
    )
    assert info["Negative prompt"] == "EasyNegative, lowres"
    assert {k: info[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")} == {
        "Steps": "3",
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": "6.5",
        "Seed": "42",
        "Size": "64x64",
    }
    assert info["Lora hashes"] == f"ksh_drawing_style: {engine.lora_hash}"
    assert 'Lora hashes: "ksh_drawing_style: ' in read_parameters(path)  # quoted as A1111 does
    assert engine.lora_hash == lora_hash(engine.settings.lora + "/" + KOHYA_FILE)
    assert info["Model"] == "sd" and "Denoising strength" not in info
    assert path.name == f"{path.name.split('-')[0]}-42.png" and path.parent.parent.name == "txt2img"


def test_saving_never_overwrites(tmp_path):
    img = Image.new("RGB", (8, 8), "red")
    (tmp_path / "00000-1.png").write_bytes(b"precious")
    paths = []
    threads = [
        threading.Thread(target=lambda: paths.append(save_png(img, "p\nSteps: 1", tmp_path, 1)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8 and (tmp_path / "00000-1.png").read_bytes() == b"precious"
    assert not list(tmp_path.glob(".tmp-*"))
    assert all(read_parameters(p) == "p\nSteps: 1" for p in paths)


def _rotated_rgba(path):
    """A tall RGBA picture stored sideways with EXIF orientation 6 (turn 90 degrees)."""
    img = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 60, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif)


def test_img2img_input_goes_through_intake(engine, tmp_path):
    src = tmp_path / "사진 1.png"
    _rotated_rgba(src)
    req = Request("a girl", image=src, strength=0.0, **{**SMALL, "width": 64, "height": 96})
    result = engine.generate(req)
    back = np.asarray(result.images[0])
    assert back.shape == (96, 64, 3)
    # EXIF applied (red half now on top), transparency composited onto white
    assert tuple(back[5, 32]) == (255, 0, 0) and tuple(back[90, 32]) == (255, 255, 255)
    info = parse_parameters(read_parameters(result.paths[0]))
    assert info["Denoising strength"] == "0" and result.paths[0].parent.parent.name == "img2img"
    drawn = engine.generate(replace(req, strength=0.7, seed=1), save=False).images[0]
    assert drawn.size == (64, 96) and not np.array_equal(np.asarray(drawn), back)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10_000}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"cfg_scale": -1}, "cfg_scale"),
        ({"width": 100}, "width"),
        ({"height": 4096}, "height"),
        ({"seed": -2}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "k_lms_unknown"}, "sampler"),
        ({"strength": 1.5}, "strength"),
        ({"lora_scale": 9.0}, "lora_scale"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"negative_prompt": None}, "negative_prompt"),
        ({"resize_mode": "zoom"}, "resize_mode"),
    ],
)
def test_bad_requests_name_the_field(engine, change, field):
    with pytest.raises(RequestError) as err:
        engine.generate(Request(**{"prompt": "a girl", **SMALL, **change}), save=False)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")


def test_bad_pictures_are_refused_with_the_file_named(engine, tmp_path):
    page = tmp_path / "drawing.png"
    page.write_text("<!doctype html><html></html>")
    huge = tmp_path / "huge.png"
    Image.new("L", (1100, 1000)).save(huge)  # over this engine's 1 Mpx upload limit
    for path, words in (
        (page, "HTML"),
        (huge, "larger than generate.limits.max_upload_pixels"),
        (tmp_path / "gone.png", "unreadable"),
    ):
        with pytest.raises(RequestError, match=words) as err:
            engine.generate(Request("a", image=path, **SMALL), save=False)
        assert err.value.field == "image" and path.name in str(err.value)


def test_textual_inversion_loads_and_a_missing_one_is_said_once(settings, tmp_path):
    width = 32  # the tiny CLIP's hidden size
    save_file({"emb_params": torch.randn(3, width)}, str(tmp_path / "EasyNegative.safetensors"))
    embeddings = (
        ("EasyNegative", str(tmp_path / "EasyNegative.safetensors")),
        ("badhandv4", str(tmp_path / "badhandv4.safetensors")),
    )
    eng = Engine(replace(settings, lora=None, embeddings=embeddings))
    assert eng.encoder.vectors == {"EasyNegative": 3}
    assert len(eng.notes) == 1 and "badhandv4" in eng.notes[0]
    ids = eng.encoder.chunks("EasyNegative, lowres")[0].ids
    added = eng.txt2img.tokenizer.convert_tokens_to_ids(
        ["EasyNegative", "EasyNegative_1", "EasyNegative_2"]
    )
    assert ids[:3] == added
    with_ti = _pixels(eng, seed=1, negative_prompt="EasyNegative")
    assert not np.array_equal(with_ti, _pixels(eng, seed=1, negative_prompt="lowres"))


def test_the_request_defaults_come_from_generate_and_a_bad_key_stops_the_cli(tmp_path, caplog):
    """`kshd generate` fills a Request from generate.* (guidance_scale is the request's
    cfg_scale) and names a bad config key in one line, exit 2, before any model loads."""
    from kshd import cli
    from kshd.config.compose import compose_conf, write_params
    from kshd.drawing.request import Request

    from .conftest import ROOT

    cfg = compose_conf(["generate.guidance_scale=4.5", "generate.steps=7"], ROOT / "conf")
    req = Request.from_settings(cfg.generate, "a cat", seed=3)
    assert (req.prompt, req.cfg_scale, req.steps, req.seed) == ("a cat", 4.5, 7, 3)
    assert req.positive_prefix == cfg.generate.positive_prefix and req.image is None
    write_params(compose_conf([], ROOT / "conf"), tmp_path / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        with pytest.raises(SystemExit) as code:
            cli.main(["generate", "--prompt", "x", "generate.resize_mode=squash"])
    assert code.value.code == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "`generate.resize_mode` = 'squash'" in line and "crop, fill, stretch" in line


INPAINT_FIELDS = ("mask_blur", "inpaint_area", "inpaint_padding")
CONTROL_FIELDS = ("control_type", "preprocessor", "control_weight", "guidance_start",
                  "guidance_end", "control_mode")  # fmt: skip


def test_gui_fields_handlers_and_cli_flags_are_named_as_the_request():
    """Gradio passes a tab's inputs by position: the handlers' parameters must be the tab's
    fields, in order, and every one a field of its mode's requests (one name for CFG:
    cfg_scale)."""
    import inspect
    from dataclasses import fields

    from kshd.cli import build_parser
    from kshd.drawing.commands import request_changes
    from kshd.drawing.gui_actions import Handlers
    from kshd.drawing.gui_modes import TAB_FIELDS, tab_parts
    from kshd.drawing.request import REQUEST_KEYS, Request

    names = list(TAB_FIELDS)
    request = [f.name for f in fields(Request)]
    for part in tab_parts().values():
        assert set(part.fields) <= {f.name for f in fields(part.mode.request)}
    assert "cfg_scale" in names
    txt2img = list(inspect.signature(Handlers.txt2img).parameters)[1:-2]
    img2img = list(inspect.signature(Handlers.img2img).parameters)[1:-2]
    assert txt2img == names and img2img == ["image", "strength", "resize_mode", *names]
    args = build_parser().parse_args(["img2img", "--prompt", "p", "--image", "i.png", "--cfg", "3"])
    changes = request_changes(args)
    assert set(changes) == set(request) - {"prompt"}
    assert (changes["cfg_scale"], changes["image"], changes["steps"]) == (3.0, "i.png", None)
    assert REQUEST_KEYS["cfg_scale"] == "guidance_scale"  # the config's one other name
    assert {k: v for k, v in REQUEST_KEYS.items() if k != "cfg_scale"} == {
        **{f: f"control.{f.removeprefix('control_')}" for f in CONTROL_FIELDS},
        **{f: f"inpaint.{f.removeprefix('inpaint_')}" for f in INPAINT_FIELDS},
    }  # and the ControlNet unit's and the inpainting's, under generate.control and .inpaint
    args = build_parser().parse_args(["sketch", "--prompt", "p", "--image", "s.png",
                                      "--control", "canny", "--init", "i.png"])  # fmt: skip
    changes = request_changes(args)
    assert (changes["control_image"], changes["control_type"], changes["image"]) == (
        "s.png", "canny", "i.png")  # fmt: skip
