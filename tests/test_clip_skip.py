"""Clip skip (`model.clip_skip`, A1111's setting, kohya's --clip_skip): the text encoder's
penultimate layer through its final layer norm, the same in training (its text cache keyed by
it), validation, evaluation and the app; written to and read from PNG parameters; SDXL says so."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from kshd.adapters.files import KOHYA_FILE, KohyaInfo, kohya_metadata
from kshd.config.compose import compose_conf, defaults
from kshd.config.errors import ConfigError
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import read_parameters, request_fields
from kshd.drawing.request import Request, RequestError
from kshd.prompts.encoding import CHUNK, CaptionChunker, PromptEncoder, encode_chunk_ids
from kshd.training.components import load_components
from kshd.training.latent_cache import TextSource
from kshd.training.loop import train_lora

ROOT = Path(__file__).resolve().parents[1]
TRIGGER = "drawn by KSH drawing style"
PROMPT = "an anime girl, (blonde hair:1.3), green eyes"
SMALL = dict(steps=3, width=64, height=64, sampler="euler", seed=5, positive_prefix="",
             negative_prefix="", negative_prompt="lowres", lora_scale=0.0)  # fmt: skip
TRAIN = dict(resolution=64, batch_size=2, epochs=1, learning_rate=1e-2, seed=3)


@pytest.fixture(scope="module")
def clip(tiny_models):
    path = tiny_models["sd"]
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    return tok, CLIPTextModel.from_pretrained(path, subfolder="text_encoder").eval()


def _by_hand(te: CLIPTextModel, ids: torch.Tensor) -> torch.Tensor:
    """A1111's clip skip 2 as kohya's get_hidden_states computes it: hidden_states[-2] through
    the final layer norm (the model's own since transformers 5, `text_model.`'s before)."""
    norm = getattr(te, "text_model", te).final_layer_norm
    with torch.no_grad():
        return norm(te(ids, output_hidden_states=True).hidden_states[-2])


def _ids(tok, text: str) -> torch.Tensor:
    return tok(text, padding="max_length", max_length=77, return_tensors="pt").input_ids


def test_clip_skip_2_is_the_penultimate_layer_through_the_final_layer_norm(clip):
    tok, te = clip
    ids = _ids(tok, "an anime girl, blonde hair")
    with torch.no_grad():
        last = te(ids)[0][0]
        two = encode_chunk_ids(te, ids[None], 2)[0]
        assert torch.equal(encode_chunk_ids(te, ids[None], 1)[0], last)
    assert torch.equal(two, _by_hand(te, ids)[0])
    assert (two - last).abs().max() > 1e-3  # another layer: another conditioning
    app = PromptEncoder(tok, te, clip_skip=2)
    assert torch.equal(app.encode("an anime girl, blonde hair")[0], two)
    assert torch.equal(app.encode("an anime girl, blonde hair", clip_skip=1)[0], last)


def test_the_app_at_clip_skip_2_equals_diffusers_encode_prompt_at_its_clip_skip_1(tiny_models):
    """diffusers counts the layers skipped: its clip_skip=1 is A1111's (and this app's) 2."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    te = pipe.text_encoder
    if not hasattr(te, "text_model"):  # transformers 5's CLIPTextModel: diffusers 0.42 reads
        object.__setattr__(te, "text_model", te)  # text_model.final_layer_norm (unregistered)
    prompt = "an anime girl, blonde hair"
    theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False, clip_skip=1)
    ours = PromptEncoder(pipe.tokenizer, pipe.text_encoder, clip_skip=2).encode(prompt)
    assert torch.equal(ours, theirs)


def test_a_long_prompt_and_caption_take_clip_skip_per_75_token_chunk(clip):
    tok, te = clip
    caption = ", ".join(f"detail {i}" for i in range(30)) + ", " + TRIGGER
    fitted = CaptionChunker(tok, 150, TRIGGER)(caption)
    assert fitted.ids.shape == (2, 77) and fitted.cut == 0
    with torch.no_grad():
        both = encode_chunk_ids(te, fitted.ids[None], 2)[0]
    for k in range(2):  # each chunk through CLIP alone, each at the penultimate layer
        assert torch.allclose(both[77 * k : 77 * (k + 1)], _by_hand(te, fitted.ids[k : k + 1])[0],
                              atol=1e-6)  # fmt: skip
    long = PromptEncoder(tok, te, clip_skip=2).encode(caption)
    assert long.shape[1] == 77 * 2
    assert torch.allclose(long[0, 77:], both[77:], atol=1e-6)  # the same chunk, the same layer


def test_the_text_cache_key_holds_the_clip_skip_and_keys_at_1_are_as_before(clip, tmp_path):
    tok, te = clip
    chunker = CaptionChunker(tok, 75, TRIGGER)
    text = "a drawing, " + TRIGGER

    def source(skip: int) -> TextSource:
        def encode(ids):
            return {"encoder_hidden_states": encode_chunk_ids(te, ids["input_ids"], skip)}

        return TextSource(encode, [chunker], tmp_path, torch.device("cpu"), skip)

    one, two = source(1), source(2)
    legacy = hashlib.sha256(f"{CHUNK}\0{TRIGGER}\0{text}".encode()).hexdigest()[:32]
    assert one._path(text).name == f"{legacy}.safetensors"  # caches made before still match
    assert two._path(text) != one._path(text)  # a cache made at 1 is never read at 2
    one.precompute([text])
    two.precompute([text])
    assert torch.equal(two.get(text)["encoder_hidden_states"], _by_hand(te, chunker(text).ids)[0])
    assert not torch.equal(two.get(text)["encoder_hidden_states"],
                           one.get(text)["encoder_hidden_states"])  # fmt: skip


def test_training_caches_the_captions_as_the_app_encodes_them_at_clip_skip_2(
    tiny_models, sample_split, tmp_path
):
    c = load_components(str(tiny_models["sd"]), clip_skip=2)
    result = train_lora(c, sample_split, defaults("train", **TRAIN, cache_latents=True),
                        cache_dir=tmp_path)  # fmt: skip
    assert result.steps == 5
    (cached,) = [load_file(str(p))["hidden"] for p in tmp_path.glob("text-*/*.safetensors")]
    caption = sample_split["text"][0]
    app = PromptEncoder(c.tokenizer, c.text_encoder.float().cpu(), clip_skip=2)
    torch.testing.assert_close(cached, app.encode(caption)[0].float(), rtol=1e-5, atol=1e-5)
    last = app.encode(caption, clip_skip=1)[0]
    assert (cached - last).abs().max() > 1e-3


def test_a_text_encoder_lora_trains_at_clip_skip_2_and_the_file_records_it(
    tiny_models, sample_split, demo_cfg
):
    """The skipped last layer's adapter gets no gradient (as in kohya's runs), the layers
    under it learn; kohya's `ss_clip_skip` says 2 in the file the train stage writes."""
    from kshd.config.compose import with_values
    from kshd.stages.train import write_outputs

    c = load_components(str(tiny_models["sd"]), clip_skip=2)
    s = defaults("train", **TRAIN, train_text_encoder=True)
    result = train_lora(c, sample_split, s)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    last = c.text_encoder.config.num_hidden_layers - 1
    b = {n: p for n, p in c.text_encoder.named_parameters() if "lora_B" in n}
    assert b and all(p.abs().sum() == 0 for n, p in b.items() if f"layers.{last}." in n)
    assert any(p.abs().sum() > 0 for n, p in b.items() if f"layers.{last - 1}." in n)
    cfg = with_values(demo_cfg, {"model.clip_skip": 2})
    write_outputs(cfg, s, c, result, len(sample_split))
    with safe_open(str(Path(cfg.output.lora_dir) / KOHYA_FILE), "pt") as f:
        assert f.metadata()["ss_clip_skip"] == "2"


def test_kohya_metadata_records_clip_skip_only_when_not_1():
    info = KohyaInfo(base_model="b", resolution=64, trigger=TRIGGER, steps=1, epochs=1,
                     batch_size=1, learning_rate=1e-4, num_images=1, seed=0)  # fmt: skip
    assert "ss_clip_skip" not in kohya_metadata(info, {})  # files trained at 1 stay as they were
    two = KohyaInfo(**{**info.__dict__, "clip_skip": 2})
    assert kohya_metadata(two, {})["ss_clip_skip"] == "2"


@pytest.fixture(scope="module")
def engines(tiny_models, tmp_path_factory):
    def engine(skip: int) -> Engine:
        out = tmp_path_factory.mktemp(f"out{skip}")
        limits = defaults("generate.limits")
        return Engine(EngineSettings(str(tiny_models["sd"]), device="cpu", clip_skip=skip,
                                     outputs_dir=str(out), limits=limits))  # fmt: skip

    return {1: engine(1), 2: engine(2)}


def _pixels(images) -> np.ndarray:
    return np.asarray(images[0], dtype=np.int16)


def test_a_png_drawn_at_2_says_so_and_png_info_draws_it_at_2_again(engines):
    """The file's `Clip skip: 2` overrides the base's 1 (A1111's infotext over its setting):
    the same picture, the same text; at 1 nothing is written, and it reads back as 1."""
    drawn = engines[2].generate(Request(PROMPT, **SMALL))
    text = read_parameters(drawn.paths[0])
    assert "Clip skip: 2" in text
    fields, unused = request_fields(text, "", "")
    assert fields["clip_skip"] == 2 and unused == []
    again = engines[1].generate(Request(**fields), save=False)
    assert np.array_equal(_pixels(again.images), _pixels(drawn.images))
    assert again.infotexts[0] == text
    plain = engines[1].generate(Request(PROMPT, **SMALL), save=False)
    assert "Clip skip" not in plain.infotexts[0]
    assert np.abs(_pixels(plain.images) - _pixels(drawn.images)).mean() > 0.5
    assert request_fields(plain.infotexts[0], "", "")[0]["clip_skip"] == 1
    with pytest.raises(RequestError, match="clip_skip: 3 must be a whole number from 1 to 2"):
        engines[1].generate(Request(PROMPT, **SMALL, clip_skip=3), save=False)


def test_kshd_generate_takes_a_clip_skip_flag_over_the_base_s():
    from kshd.cli import build_parser
    from kshd.drawing.commands import request_changes

    args = build_parser().parse_args(["generate", "--prompt", "p", "--clip-skip", "2"])
    assert request_changes(args)["clip_skip"] == 2
    args = build_parser().parse_args(["generate", "--prompt", "p"])
    assert request_changes(args)["clip_skip"] is None  # the base's model.clip_skip


def test_an_sdxl_base_says_in_one_line_that_clip_skip_is_not_applied(tiny_models, caplog):
    """SDXL is always conditioned on its penultimate layers: 2 draws as 1, said once, and no
    `Clip skip` is written."""
    settings = dict(device="cpu", limits=defaults("generate.limits"), outputs_dir="unused")
    two = Engine(EngineSettings(str(tiny_models["sdxl"]), clip_skip=2, **settings))
    (note,) = two.notes
    assert note.startswith("model.clip_skip=2 is not applied to an SDXL base") and "\n" not in note
    one = Engine(EngineSettings(str(tiny_models["sdxl"]), clip_skip=1, **settings))
    req = dict(SMALL, steps=2)
    drawn = two.generate(Request(PROMPT, **req), save=False)
    at_one = one.generate(Request(PROMPT, **req), save=False)
    assert np.array_equal(_pixels(drawn.images), _pixels(at_one.images))
    assert "Clip skip" not in drawn.infotexts[0]
    one.generate(Request(PROMPT, **req, clip_skip=2), save=False)  # from a PNG's parameters
    one.generate(Request(PROMPT, **req, clip_skip=2), save=False)
    assert one.notes == [note.replace("model.clip_skip=2", "Clip skip=2")]  # said once
    with caplog.at_level(logging.WARNING):
        load_components(str(tiny_models["sdxl"]), unet=False, clip_skip=2)
    assert "model.clip_skip=2 is not applied to an SDXL base" in caplog.text


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("anything_v5", 2), ("world", 1), ("illustrious_xl", 1), ("noobai_xl", 1),
     ("noobai_xl_vpred", 1), ("tiny_sdxl", 1), ("tiny_sdxl_vpred", 1)],
)  # fmt: skip
def test_each_model_preset_has_its_base_s_clip_skip(preset, expected):
    """Anything V5 (the NAI lineage) was trained at 2; the world's and SDXL bases at 1."""
    assert compose_conf([f"model={preset}"], conf_dir=ROOT / "conf").model.clip_skip == expected


def test_a_bad_clip_skip_is_named_and_a_changed_one_changes_the_result_keys():
    with pytest.raises(ConfigError, match=r"`model\.clip_skip` = 3 is not valid"):
        defaults("model", clip_skip=3)
    assert defaults("model", clip_skip=1).encoding_identity() == {}  # keys as before
    assert defaults("model", clip_skip=2).encoding_identity() == {"clip_skip": 2}
