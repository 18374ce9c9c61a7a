"""Captions past 77 tokens (train.max_token_length); DataLoader workers never run the VAE."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from kshd.config.compose import defaults
from kshd.prompts.encoding import CaptionChunker, encode_chunk_ids
from kshd.training.batches import DrawingDataset, ItemOptions
from kshd.training.components import load_components
from kshd.training.latent_cache import TextSource
from kshd.training.loop import train_lora

TRIGGER = "drawn by KSH drawing style"
BASE = dict(resolution=64, batch_size=2, epochs=1, learning_rate=1e-2, seed=3)


@pytest.fixture(scope="module")
def tok(tiny_models) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(tiny_models["sd"], subfolder="tokenizer")


def _count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False, verbose=False).input_ids)


def _caption(tok, body_tokens: int) -> str:
    """A tag caption whose body has more than `body_tokens` tokens, the trigger phrase last."""
    tags: list[str] = []
    while _count(tok, ", ".join(tags)) <= body_tokens:
        tags.append(f"tag {len(tags)}")
    return ", ".join([*tags, TRIGGER])


def _contains(ids: torch.Tensor, part: list[int]) -> bool:
    flat = ids.flatten().tolist()
    return any(flat[i : i + len(part)] == part for i in range(len(flat) - len(part) + 1))


def _split(texts: list[str], sizes: list[tuple[int, int]]):
    images = [Image.new("RGB", size, (40 * i % 255, 90, 160)) for i, size in enumerate(sizes)]
    features = Features({"image": ImageFeature(), "text": Value("string")})
    return Dataset.from_dict({"image": images, "text": texts}, features=features)


def test_a_long_caption_keeps_its_trigger_phrase(tok):
    caption = _caption(tok, 90)
    trigger = tok(TRIGGER, add_special_tokens=False).input_ids
    s = defaults("train", resolution=64, center_crop=True, random_flip=False, seed=0)
    opts = ItemOptions.from_settings(s, keep_tag=TRIGGER)
    ds = DrawingDataset(_split([caption], [(64, 64)]), tok, opts)
    assert _contains(ds[0]["input_ids"], trigger)
    fitted = CaptionChunker(tok, 75, TRIGGER)(caption)
    assert fitted.ids.shape == (1, 77) and fitted.cut > 0
    assert fitted.tokens == _count(tok, caption)


def test_longer_max_token_length_keeps_the_whole_caption_in_chunks(tok):
    caption = _caption(tok, 90)
    fitted = CaptionChunker(tok, 150, TRIGGER)(caption)
    assert fitted.ids.shape == (2, 77) and fitted.cut == 0
    tokens = [t for row in fitted.ids.tolist() for t in row[1:-1] if t != tok.pad_token_id]
    assert len(tokens) == _count(tok, caption)  # every token, in the app's chunks
    short = CaptionChunker(tok, 225, TRIGGER)("a drawing, " + TRIGGER)
    assert short.ids.shape == (3, 77) and short.cut == 0  # padded with empty chunks: batches stack


def test_a_trigger_at_the_start_is_kept_by_cutting_the_end(tok):
    caption = ", ".join([TRIGGER, *_caption(tok, 120).split(", ")[:-1]])
    fitted = CaptionChunker(tok, 75, TRIGGER)(caption)
    assert fitted.cut > 0 and fitted.ids[0, 1 : 1 + _count(tok, TRIGGER)].tolist() == (
        tok(TRIGGER, add_special_tokens=False).input_ids
    )


def test_a_short_caption_is_encoded_as_before(tok):
    """75 tokens and a caption that fits: the ids the tokenizer gives with padding to 77."""
    text = "a drawing, " + TRIGGER
    old = tok(text, max_length=77, padding="max_length", truncation=True).input_ids
    assert CaptionChunker(tok, 75, TRIGGER)(text).ids.tolist() == [old]


def test_bad_max_token_length_names_the_key():
    from kshd.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.max_token_length"):
        defaults("train", max_token_length=100)


def test_cached_text_equals_live_encoding(tok, tiny_models, tmp_path):
    te = CLIPTextModel.from_pretrained(tiny_models["sd"], subfolder="text_encoder").eval()
    chunker = CaptionChunker(tok, 150, TRIGGER)
    texts = [_caption(tok, 90), "a drawing, " + TRIGGER]

    def encode(ids):
        return {"encoder_hidden_states": encode_chunk_ids(te, ids["input_ids"], 1)}

    source = TextSource(encode, [chunker], tmp_path, torch.device("cpu"), 1)
    source.precompute(texts)
    with torch.no_grad():
        live = encode_chunk_ids(te, torch.stack([chunker(t).ids for t in texts]), 1)
    for text, expected in zip(texts, live, strict=True):
        cached = source.get(text)["encoder_hidden_states"]
        assert cached.shape == (154, te.config.hidden_size)
        torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-5)
    other = TextSource(
        encode, [CaptionChunker(tok, 225, TRIGGER)], tmp_path, torch.device("cpu"), 1
    )
    assert other._path(texts[0]) != source._path(texts[0])  # the key holds max_token_length
    # read from disk per item, not held: 5,700 captions x 225 tokens would be ~4 GB in memory
    assert source.memo == {}


def test_training_cached_equals_live_and_reports_long_captions(tok, tiny_models, tmp_path):
    long_caption = _caption(tok, 160)
    texts = [long_caption, "a drawing, " + TRIGGER] * 2
    split = _split(texts, [(64, 64), (80, 64), (64, 64), (64, 80)])  # cached and live crops mix

    def train(**kw):
        s = defaults("train", **{**BASE, "max_token_length": 150, **kw})
        c = load_components(str(tiny_models["sd"]))
        return train_lora(c, split, s, cache_dir=tmp_path / "cache", keep_tag=TRIGGER)

    cached, live = train(), train(cache_latents=False)
    assert [h["loss"] for h in cached.history] == pytest.approx(
        [h["loss"] for h in live.history], rel=1e-4
    )
    report = cached.captions
    assert report["max_token_length"] == 150 and report["too_long"] == 2
    assert report["examples"][0]["tokens"] == _count(tok, long_caption)
    assert report["examples"][0]["cut"] > 0
    assert live.captions == report


def test_workers_never_run_the_vae_and_train_as_the_main_process(
    tiny_models, sample_split, tmp_path
):
    """Random crops of non-square drawings are encoded live: in the main process, not a worker."""

    def guarded(c):
        encode = c.vae.encode

        def in_main_process_only(*args, **kwargs):
            if torch.utils.data.get_worker_info() is not None:
                raise RuntimeError("the VAE ran in a DataLoader worker")
            return encode(*args, **kwargs)

        c.vae.encode = in_main_process_only
        return c

    def run(workers: int):
        c = guarded(load_components(str(tiny_models["sd"])))
        s = defaults("train", **BASE, dataloader_num_workers=workers, center_crop=False)
        result = train_lora(c, sample_split, s, cache_dir=tmp_path)
        assert result.latents["live"] > 0  # some crops could not be cached
        return [h["loss"] for h in result.history], c

    (plain, c0), (forked, c2) = run(0), run(2)
    assert forked == plain
    from kshd.adapters.registry import build_adapter

    s = defaults("train", **BASE)
    lora = build_adapter(s.adapter, s.rank, s.alpha)
    a, b = lora.tensors(c0.unet), lora.tensors(c2.unet)
    assert all(torch.equal(a[k], b[k]) for k in a)
