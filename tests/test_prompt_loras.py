"""`<lora:name:weight>` in the prompt, A1111's way: the LoRA of that file stem loads at that
weight beside the chooser's (a tag naming the chooser's sets its weight), several at once, each
in `Lora hashes`, the tags kept in the PNG's prompt and out of the text encoder's; a name found
nowhere is said once and the drawing goes on; PNG Info says what of a file is not here."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kshd.adapters.files import KOHYA_FILE
from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.gui_library import png_info
from kshd.drawing.pnginfo import lora_hash, parse_parameters, read_parameters
from kshd.drawing.prompt_loras import not_here, split_tags
from kshd.drawing.request import Request, RequestError

from .conftest import ROOT
from .helpers.inprocess import kshd_here

DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip


@pytest.fixture(scope="module")
def loras(random_lora, tmp_path_factory):
    """A LoRA folder (`generate.gui.lora_dirs`) holding `other.safetensors`: the random LoRA's
    kohya file under another name."""
    folder = tmp_path_factory.mktemp("loras")
    shutil.copy(random_lora / KOHYA_FILE, folder / "other.safetensors")
    return folder


def _engine(tiny_models, random_lora, loras, chosen, tmp_path) -> Engine:
    return Engine(EngineSettings(str(tiny_models["sd"]), lora=str(chosen) if chosen else None,
                                 device="cpu", outputs_dir=str(tmp_path),
                                 limits=defaults("generate.limits"), trained_lora=str(random_lora),
                                 checkpoints_dir=None, lora_dirs=(str(loras),)))  # fmt: skip


def _draw(engine: Engine, prompt: str, **changes):
    out = engine.generate(Request(prompt, **DRAW | changes), save=False)
    return np.asarray(out.images[0], dtype=np.int16), out


def test_the_tags_are_split_as_a1111_reads_them():
    text, tags = split_tags("a girl <lora:foo:0.7>, <lora:bar> smile <lora:x y:1:0.5>")
    assert text == "a girl ,  smile " and tags == [("foo", "0.7"), ("bar", ""), ("x y", "1")]


def test_prompt_loras_load_at_their_weights_beside_the_chooser_s(
    tiny_models, random_lora, loras, tmp_path
):
    engine = _engine(tiny_models, random_lora, loras, random_lora, tmp_path)
    bare = _engine(tiny_models, random_lora, loras, None, tmp_path)
    base, _ = _draw(bare, "a girl", lora_scale=0.0)
    full, _ = _draw(engine, "a girl", lora_scale=1.0)
    half, _ = _draw(engine, "a girl", lora_scale=0.5)
    # a tag naming the chooser's LoRA sets its weight (the slider's 1 is not used)
    tagged, out = _draw(engine, "a girl <lora:ksh_drawing_style:0.5>", lora_scale=1.0)
    assert np.array_equal(tagged, half)
    info = parse_parameters(out.infotexts[0])
    assert info["Prompt"] == "a girl <lora:ksh_drawing_style:0.5>"  # the tag once, as typed
    # a prompt LoRA alone, by its file stem, weight left out = 1: the same weights as the chooser's
    alone, out = _draw(bare, "a girl <lora:other>")
    assert np.array_equal(alone, full) and out.notes == []
    other_hash = lora_hash(loras / "other.safetensors")
    assert parse_parameters(out.infotexts[0])["Lora hashes"] == f"other: {other_hash}"
    # two at once, each at its weight: the chooser's at 0.5 and other's at 0.5 draw as one at 1
    both, out = _draw(engine, "a girl <lora:other:0.5>", lora_scale=0.5)
    assert np.abs(both - full).max() <= 2 and not np.array_equal(both, half)
    info = parse_parameters(out.infotexts[0])
    assert info["Prompt"] == "a girl <lora:other:0.5> <lora:ksh_drawing_style:0.5>"
    chosen_hash = lora_hash(random_lora / KOHYA_FILE)
    assert info["Lora hashes"] == f"ksh_drawing_style: {chosen_hash}, other: {other_hash}"
    # the prompt's LoRA goes with the tag: the base weights come back exactly
    assert np.array_equal(_draw(engine, "a girl", lora_scale=0.0)[0], base)
    assert np.array_equal(_draw(bare, "a girl")[0], base)


def test_an_unknown_name_is_said_once_and_drawing_goes_on(
    tiny_models, random_lora, loras, tmp_path, caplog
):
    engine = _engine(tiny_models, random_lora, loras, None, tmp_path)
    base, _ = _draw(engine, "a girl")
    drawn, out = _draw(engine, "a girl <lora:nowhere:0.7> <lora:nowhere:1>", batch_count=2)
    assert np.array_equal(drawn, base)  # the tag is not read as words either
    assert out.notes == [f"<lora:nowhere>: no LoRA of that name in {random_lora}, {loras}; "
                         "drawn without it"]  # fmt: skip
    assert sum("<lora:nowhere>" in r.getMessage() for r in caplog.records) == 1
    assert "Lora hashes" not in out.infotexts[0] and "<lora:nowhere:0.7>" in out.infotexts[0]
    with pytest.raises(RequestError, match=r"prompt: <lora:other:9>: the weight must be"):
        _draw(engine, "a girl <lora:other:9>")


def test_kshd_generate_reads_the_tags(capsys, tiny_models, random_lora, loras, tmp_path):
    out = tmp_path / "out"
    run = kshd_here(["generate", "--prompt", "a girl <lora:other:0.8> <lora:gone>", "--steps",
                     "2", "--width", "64", "--height", "64", "--seed", "4", "--out", str(out),
                     f"model.pretrained={tiny_models['sd']}", "generate.lora=null",
                     f"generate.gui.lora_dirs=[{loras}]", "generate.device=cpu"],
                    capsys, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    info = parse_parameters(read_parameters(out / "00000-4.png"))
    assert info["Prompt"].endswith("a girl <lora:other:0.8> <lora:gone>")
    assert info["Lora hashes"] == f"other: {lora_hash(loras / 'other.safetensors')}"
    assert run.stderr.count("<lora:gone>: no LoRA of that name in") == 1


A1111 = (
    "1girl <lora:foo:0.7> <lora:other:0.5>\n"
    "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: abc123, "
    'Model: anything-v5, Lora hashes: "foo: 0123456789ab, other: {other}"'
)


def test_png_info_says_which_model_and_loras_are_not_here(
    tiny_models, random_lora, loras, tmp_path
):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    engine = _engine(tiny_models, random_lora, loras, random_lora, tmp_path)
    other = lora_hash(loras / "other.safetensors")
    text = A1111.format(other=other)
    assert engine.not_here(text) == "not here: model anything-v5 [abc123]; LoRA foo [0123456789ab]"
    ours = engine.generate(Request("a girl <lora:other:1>", **DRAW), save=False).infotexts[0]
    assert engine.not_here(ours) is None  # the app's own file: all of it is here
    here = {"other": other, "foo": "0123456789ab"}
    changed = not_here(text.replace(other, "f" * 12), ("anything-v5", "abc123"), here)
    assert changed == "not here: LoRA other [ffffffffffff]"  # the same name, another file
    png = tmp_path / "a1111.png"
    meta = PngInfo()
    meta.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(png, pnginfo=meta)
    read, note = png_info(str(png), here=engine.not_here)
    assert read == text and note == "not here: model anything-v5 [abc123]; LoRA foo [0123456789ab]"
