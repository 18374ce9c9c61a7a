"""The WD v3 tagger behind `caption.kind=wd_tagger`: kohya's preprocessing to the array,
thresholds per category, rating tags, undesired tags, underscores, NoobAI-XL's order with the
trigger in the artist slot, and one-line errors for a missing model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kshd.captioners.registry import caption_identity
from kshd.captioners.wd_tagger import WdTagger, preprocess
from kshd.config.compose import compose_conf, with_values
from kshd.config.errors import ConfigError
from kshd.models.source import ModelSourceError

from .conftest import ROOT
from .helpers.tagger import SIZE, write_tiny_tagger

TRIGGER = "drawn by KSH drawing style"


# --- kohya's code, the reference: kohya-ss/sd-scripts finetune/tag_images_by_wd14_tagger.py
# (preprocess_image) and library/utils.py (resize_image, pil_resize), copied as they are but for
# IMAGE_SIZE made a parameter and resize_interpolation left to its default (None).
def kohya_pil_resize(image, size, interpolation):
    import cv2

    has_alpha = image.shape[2] == 4 if len(image.shape) == 3 else False
    if has_alpha:
        pil_image = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA))
    else:
        pil_image = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    resized_pil = pil_image.resize(size, resample=interpolation)
    if has_alpha:
        resized_cv2 = cv2.cvtColor(np.array(resized_pil), cv2.COLOR_RGBA2BGRA)
    else:
        resized_cv2 = cv2.cvtColor(np.array(resized_pil), cv2.COLOR_RGB2BGR)
    return resized_cv2


def kohya_resize_image(image, width, height, resized_width, resized_height):
    import cv2

    if width >= resized_width and height >= resized_height:
        return cv2.resize(image, (resized_width, resized_height), interpolation=cv2.INTER_AREA)
    return kohya_pil_resize(image, (resized_width, resized_height), Image.Resampling.LANCZOS)


def kohya_preprocess_image(image: Image.Image, IMAGE_SIZE: int) -> np.ndarray:  # noqa: N803
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])  # Use alpha channel as mask
        image = background
    image = np.array(image)
    image = image[:, :, ::-1]  # RGB->BGR
    size = max(image.shape[0:2])
    pad_x = size - image.shape[1]
    pad_y = size - image.shape[0]
    pad_l = pad_x // 2
    pad_t = pad_y // 2
    image = np.pad(image, ((pad_t, pad_y - pad_t), (pad_l, pad_x - pad_l), (0, 0)),
                   mode="constant", constant_values=255)  # fmt: skip
    image = kohya_resize_image(image, image.shape[0], image.shape[1], IMAGE_SIZE, IMAGE_SIZE)
    image = image.astype(np.float32)
    return image


# --- end of kohya's code


def rgba_drawing(width: int, height: int, seed: int = 0) -> Image.Image:
    """Colour noise with every alpha from clear to opaque."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = np.linspace(0, 255, width * height).astype(np.uint8).reshape(height, width)
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize("size", [(61, 40), (40, 61), (20, 13)], ids=["wide", "tall", "small"])
def test_preprocessing_equals_kohyas(size):
    """Alpha onto white, padded to a white square, resized (area down, Lanczos up), BGR float32
    0-255: the same array as kohya's script makes, for the model's input size."""
    for image in (rgba_drawing(*size), rgba_drawing(*size).convert("RGB"),
                  rgba_drawing(*size).convert("LA")):  # fmt: skip
        ours = preprocess(image, SIZE)
        assert ours.dtype == np.float32 and ours.shape == (SIZE, SIZE, 3)
        assert np.array_equal(ours, kohya_preprocess_image(image, SIZE))


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return write_tiny_tagger(tmp_path_factory.mktemp("tagger"))


def tag_settings(tagger_dir, *overrides: str):
    return compose_conf(
        ["caption=wd_tagger", f"caption.model={tagger_dir}", *overrides], conf_dir=ROOT / "conf"
    ).caption


def red(size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, (255, 0, 0))


def test_tags_in_noobai_order_with_the_trigger_in_the_artist_slot(tagger_dir):
    """Count tag, character (0.9 over 0.85; 0.6 under it), trigger, general tags over 0.35 in the
    label file's order (smile's 0.3 under it), `^_^` kept while underscores become spaces; the
    red drawing is tagged red (BGR in the model's order), not blue."""
    settings = tag_settings(tagger_dir)
    tagger = WdTagger(settings)
    [caption] = tagger.caption([red()], ["k"])
    assert caption == "1girl, hatsune miku, long hair, ^_^, red background, simple background"
    assert WdTagger.place_trigger(settings, caption) == (
        f"1girl, hatsune miku, {TRIGGER}, long hair, ^_^, red background, simple background"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["caption.character_threshold=0.5"],
         "1girl, hatsune miku, kita ikuyo (bocchi the rock!), long hair, ^_^, red background, "
         "simple background"),
        (["caption.general_threshold=0.55"], "1girl, hatsune miku, ^_^, red background, "
         "simple background"),
        (["caption.use_rating_tags=true"], "1girl, hatsune miku, sensitive, long hair, ^_^, "
         "red background, simple background"),
        (["caption.undesired_tags=[simple_background,Hatsune Miku]"],
         "1girl, long hair, ^_^, red background"),
        (["caption.remove_underscore=false"],
         "1girl, hatsune_miku, long_hair, ^_^, red_background, simple_background"),
        (["caption.always_first_tags=[simple background,1girl]"],
         "simple background, 1girl, hatsune miku, long hair, ^_^, red background"),
    ],
    ids=["character_threshold", "general_threshold", "rating", "undesired", "underscores",
         "always_first"],
)  # fmt: skip
def test_each_option_changes_the_tags_and_the_cache_identity(tagger_dir, overrides, expected):
    """Thresholds per category, the rating after the character (NoobAI's special tags), undesired
    tags in either spelling, underscores kept when asked: the text and the cache key change."""
    settings = tag_settings(tagger_dir, *overrides)
    assert WdTagger(settings).caption([red()], ["k"]) == [expected]
    assert caption_identity(settings) != caption_identity(tag_settings(tagger_dir))


def test_a_fixed_batch_model_tags_any_batch(tagger_dir, tmp_path):
    """A tagger exported for batches of one tags a batch of three, each as the dynamic one."""
    images = [red(), Image.new("RGB", (30, 30), (0, 0, 255)), red((8, 8))]
    fixed = WdTagger(tag_settings(write_tiny_tagger(tmp_path / "fixed", batch=1)))
    assert fixed.chunk == 1
    expected = WdTagger(tag_settings(tagger_dir)).caption(images, ["a", "b", "c"])
    assert fixed.caption(images, ["a", "b", "c"]) == expected
    assert "blue background" in expected[1] and "red background" not in expected[1]


def test_trigger_slot_for_sidecars_overrides_and_the_other_positions(tagger_dir):
    """Any caption under a tag kind gets the slot: after the count and character tags however
    spelt; a sentence (neither) gets it first. `start` and `end` work as for BLIP-2."""
    settings = tag_settings(tagger_dir)
    place = WdTagger.place_trigger
    assert place(settings, "2girls, hatsune_miku, Kita Ikuyo (bocchi the rock!), smile") == (
        f"2girls, hatsune_miku, Kita Ikuyo (bocchi the rock!), {TRIGGER}, smile"
    )
    assert place(settings, "a girl reading, by a river") == f"{TRIGGER}, a girl reading, by a river"
    assert place(settings, "") == TRIGGER
    end = with_values(settings, {"trigger_position": "end"})
    assert place(end, "1girl, smile") == f"1girl, smile, {TRIGGER}"
    start = with_values(settings, {"trigger_position": "start"})
    assert place(start, "1girl, smile") == f"{TRIGGER}, 1girl, smile"


def test_artist_position_only_for_tag_captions():
    """BLIP-2's sentences have no artist slot: one line naming the key and the kinds that do."""
    with pytest.raises(ConfigError) as err:
        compose_conf(["caption.trigger_position=artist"], conf_dir=ROOT / "conf")
    message = str(err.value)
    assert message.startswith("config key `caption.trigger_position` = 'artist' is not valid")
    assert "caption=wd_tagger" in message and "\n" not in message


def test_missing_model_is_one_line_naming_caption_model(tmp_path, monkeypatch):
    """Offline and uncached, a folder without the ONNX file, a path that is no folder: each one
    line naming `caption.model`, before onnxruntime loads anything."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half/selected_tags.csv").write_text("tag_id,name,category,count\n")
    for model in ("SmilingWolf/wd-vit-tagger-v3", str(tmp_path / "half"), "./no/such/tagger"):
        with pytest.raises(ModelSourceError) as err:
            WdTagger(tag_settings(model))
        message = str(err.value)
        assert message.startswith(f"config key `caption.model` = {model!r}"), message
        assert "\n" not in message
        assert "HF_HUB_OFFLINE is set" in message or not model.startswith("SmilingWolf")
