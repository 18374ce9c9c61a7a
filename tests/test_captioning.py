"""Captions: cleaning, trigger phrase, CSV round trip, BLIP-2 through transformers (tiny)."""

from __future__ import annotations

import pytest
from PIL import Image

from kshd.captioners.base import clean_caption
from kshd.captioners.blip2 import Blip2Captioner, batch_seed
from kshd.config.compose import defaults
from kshd.data.captioning import read_info_csv, with_trigger, write_info_csv


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A painting of a girl with blonde hair", "a girl with blonde hair"),
        ("a painting of a girl girl girl smiling", "a girl smiling"),
        ("  a  boy\n in a\thoodie \ufffd ", "a boy in a hoodie"),
        ("A painting of", ""),
    ],
)
def test_clean_caption(raw, expected):
    assert clean_caption(raw, "A painting of") == expected


def test_trigger_phrase_is_appended_as_the_original_project_did():
    t = "drawn by KSH drawing style"
    assert with_trigger("a girl", t, "end") == "a girl, drawn by KSH drawing style"
    assert with_trigger("a girl", "T", "start") == "T, a girl"
    assert with_trigger("", "T", "end") == with_trigger("", "T", "start") == "T"
    assert with_trigger("a girl", "", "start") == "a girl"
    with pytest.raises(ValueError, match="trigger_position"):
        with_trigger("a", "T", "middle")


def test_info_csv_round_trips_awkward_captions(tmp_path):
    rows = [
        ("prepared/소녀-1.png", 'a "quoted", comma\nnewline 소녀, drawn by KSH drawing style'),
        ("prepared/b.png", "plain"),
    ]
    write_info_csv(tmp_path / "info.csv", rows)
    raw = (tmp_path / "info.csv").read_bytes()
    assert raw.startswith(b"image,text\r\n")  # RFC 4180 line ends
    assert read_info_csv(tmp_path / "info.csv") == rows
    import pandas as pd

    df = pd.read_csv(tmp_path / "info.csv")
    assert list(df.columns) == ["image", "text"] and df["text"][0] == rows[0][1]


def test_info_csv_with_wrong_columns_names_the_problem(tmp_path):
    (tmp_path / "info.csv").write_text("file,caption\na.png,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="image,text"):
        read_info_csv(tmp_path / "info.csv")


def test_tiny_blip2_captions_are_seeded_and_cleaned(tiny_models):
    settings = defaults("caption", model=str(tiny_models["blip2"]), max_new_tokens=8, batch_size=2)
    captioner = Blip2Captioner(settings)
    images = [Image.new("RGB", (48, 48), c) for c in ("white", "black", "red")]
    keys = ["k:1", "k:2", "k:3"]
    first = captioner.caption(images, keys)
    assert len(first) == 3 and all(isinstance(c, str) for c in first)
    assert captioner.caption(images, keys) == first  # same batch, same seed, same captions
    assert not any(c.lower().startswith("a painting of") for c in first)
    assert not any("<s>" in c or "</s>" in c or "<image>" in c for c in first)


def test_a_blip2_batch_is_seeded_from_its_members_as_before():
    """The seed a batch samples with comes from the config's seed and the batch's cache keys
    only, with the same value as before captioners had kinds: a batch captions the same."""
    keys = ["6546cb712542aec5:d1", "6546cb712542aec5:d2"]
    assert batch_seed(5508, keys) == 1718871759
    assert batch_seed(5508, keys[::-1]) != batch_seed(5508, keys) != batch_seed(1, keys)
