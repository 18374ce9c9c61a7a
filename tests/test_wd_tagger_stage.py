"""Tag captions through the caption stage (in-process): info.csv holds the tags with the trigger in
the artist slot; cached and incremental; a threshold changed re-tags; a run stopped half way keeps
its batches; tags_and_blip2 composes the tagger with BLIP-2; a missing tagger is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kshd.captioners.blip2 import Blip2Captioner
from kshd.captioners.registry import caption_identity
from kshd.captioners.tags_and_blip2 import TagsAndBlip2, part_settings
from kshd.captioners.wd_tagger import WdTagger, preprocess
from kshd.config.compose import compose_conf, with_values
from kshd.config.schema import ProjectConfig
from kshd.config.schema_caption import Blip2CaptionSettings
from kshd.data.caption_cache import CaptionCache
from kshd.data.captioning import read_info_csv
from kshd.models.source import ModelSourceError
from kshd.stages import caption, prepare

from .conftest import ROOT
from .helpers.tagger import SIZE, write_tiny_tagger
from .stage_project import noise_drawings
from .test_wd_tagger import kohya_preprocess_image, rgba_drawing

TRIGGER = "drawn by KSH drawing style"
# the tiny tagger on noise drawings (every channel's mean near 127: both colour tags pass 0.35)
TAGS = "long hair, ^_^, blue background, red background, simple background"
HEAD = f"1girl, hatsune miku, {TRIGGER}"


def project(root: Path, monkeypatch, *overrides: str, drawings: int = 5) -> ProjectConfig:
    """The demo profile in `root` (relative paths, tracking off, no overrides file), the tiny
    tagger in `root/tagger`, noise drawings prepared (if any)."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_tiny_tagger(root / "tagger")
    cfg = compose_conf(
        ["+experiment=demo", "data.raw_dir=raw", "tracking.mode=disabled",
         "caption.overrides=data/caption_overrides.csv", *overrides],
        conf_dir=ROOT / "conf",
    )  # fmt: skip
    (root / "raw").mkdir()
    if drawings:
        noise_drawings(root / "raw", drawings)
        prepare.run(cfg)
    return cfg


def info(cfg: ProjectConfig) -> dict[str, str]:
    return {image.split("/")[-1].rsplit("-", 1)[0]: text
            for image, text in read_info_csv(cfg.data.info_csv)}  # fmt: skip


def test_demo_profile_points_the_tag_kinds_at_its_world_tagger():
    """Under +experiment=demo both tag kinds use models/world-tagger; elsewhere the Hub's."""

    def conf(*overrides):
        return compose_conf(list(overrides), conf_dir=ROOT / "conf").caption

    assert conf("+experiment=demo", "caption=wd_tagger").model == "models/world-tagger"
    assert conf("+experiment=demo", "caption=tags_and_blip2").tagger_model == "models/world-tagger"
    assert conf("caption=wd_tagger").model == "SmilingWolf/wd-eva02-large-tagger-v3"
    assert conf("+experiment=sdxl").kind == "wd_tagger"
    assert conf("+experiment=sdxl", "caption=blip2").trigger_position == "end"


def test_tags_reach_info_csv_cached_and_incremental(tmp_path, monkeypatch):
    """Tags with the trigger in the artist slot for every drawing, a sidecar's too; a rerun tags
    nothing; a new drawing is the only one tagged; a changed threshold re-tags them all."""
    cfg = project(tmp_path, monkeypatch, "caption=wd_tagger", "caption.model=tagger")
    (tmp_path / "raw/drawing_000.txt").write_text("1girl, smile", encoding="utf-8")
    prepare.run(cfg)
    report = caption.run(cfg)
    assert info(cfg) == {
        "drawing_000": f"1girl, {TRIGGER}, smile",
        **{f"drawing_00{i}": f"{HEAD}, {TAGS}" for i in range(1, 5)},
    }
    assert report["sources"] == {"override": 0, "sidecar": 1, "wd_tagger_cached": 0,
                                 "wd_tagger_new": 4}  # fmt: skip
    assert report["model"] == "tagger"
    assert caption.run(cfg)["captioned_now"] == 0
    noise_drawings(tmp_path / "raw", 1, start=5)
    prepare.run(cfg)
    report = caption.run(cfg)
    assert report["captioned_now"] == 1 and report["sources"]["wd_tagger_cached"] == 4
    strict = with_values(cfg, {"caption.general_threshold": 0.55})
    assert caption.run(strict)["captioned_now"] == 5
    assert info(strict)["drawing_005"] == f"{HEAD}, ^_^, simple background"


def test_the_tagger_sees_a_prepared_drawing_as_kohya_sees_the_raw_one(tmp_path, monkeypatch):
    """prepare composites transparency onto `prepare.background` (white, kohya's colour): the
    prepared RGB the caption stage hands the tagger makes kohya's array of the raw RGBA file
    (at a size prepare keeps)."""
    cfg = project(tmp_path, monkeypatch, "caption=wd_tagger", "caption.model=tagger", drawings=0)
    rgba_drawing(61, 40).save(tmp_path / "raw/see-through.png")
    prepare.run(cfg)
    [item] = json.loads(Path(cfg.data.reports_dir, "prepare.json").read_text())["images"]
    seen = Image.open(Path(cfg.data.prepared_dir, item["output"])).convert("RGB")  # as the seam
    raw = Image.open(tmp_path / "raw/see-through.png")
    assert np.array_equal(preprocess(seen, SIZE), kohya_preprocess_image(raw, SIZE))


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it on the way."""


def test_stopped_half_way_keeps_what_it_made(tmp_path, monkeypatch):
    """Stopped during its third batch of two, the run leaves two batches in the cache and no
    info.csv; the rerun tags only the rest and writes what an unbroken run writes."""
    cfg = project(tmp_path, monkeypatch, "caption=wd_tagger", "caption.model=tagger",
                  "caption.batch_size=2", drawings=6)  # fmt: skip
    tag = WdTagger.caption
    calls = []

    def dies_on_the_third(self, images, keys):
        calls.append(len(images))
        if len(calls) == 3:
            raise Killed
        return tag(self, images, keys)

    monkeypatch.setattr(WdTagger, "caption", dies_on_the_third)
    with pytest.raises(Killed):
        caption.run(cfg)
    cache = CaptionCache(tmp_path / cfg.data.cache_dir / "captions.jsonl")
    assert len(cache.entries) == 4 and not Path(cfg.data.info_csv).exists()
    monkeypatch.setattr(WdTagger, "caption", tag)
    report = caption.run(cfg)
    assert report["sources"]["wd_tagger_cached"] == 4 and report["captioned_now"] == 2
    assert set(info(cfg).values()) == {f"{HEAD}, {TAGS}"}


def test_tags_and_blip2_composes_both(tmp_path, monkeypatch, tiny_models):
    """The tagger's tags, the trigger in their artist slot, then the tiny BLIP-2's sentence for
    the same drawing; the cache identity moves with either model's settings."""
    cfg = project(tmp_path, monkeypatch, "caption=tags_and_blip2", "caption.tagger_model=tagger",
                  f"caption.model={tiny_models['blip2']}", "caption.max_new_tokens=8",
                  drawings=2)  # fmt: skip
    settings = cfg.caption
    caption.run(cfg)
    prepared = json.loads(Path(cfg.data.reports_dir, "prepare.json").read_text())["images"]
    blip2 = Blip2Captioner(part_settings(settings, Blip2CaptionSettings))
    images = [Image.open(Path(cfg.data.prepared_dir, i["output"])).convert("RGB") for i in prepared]
    keys = [f"{caption_identity(settings)}:{i['digest']}" for i in prepared]  # the stage's batch
    sentences = blip2.caption(images, keys)
    rows = info(cfg)
    for item, sentence in zip(prepared, sentences, strict=True):
        expected = ", ".join(t for t in (f"{HEAD}, {TAGS}", sentence) if t)
        assert rows[item["file"].removesuffix(".png")] == expected
    assert any(sentences), "the tiny BLIP-2 wrote no sentence: the test shows no composition"
    assert TagsAndBlip2.identity(settings) != caption_identity(
        with_values(settings, {"prompt": "A drawing of"})
    )
    assert caption_identity(settings) != caption_identity(
        with_values(settings, {"character_threshold": 0.5})
    )


def test_a_missing_tagger_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    """The stage checks `caption.model` first: offline and uncached, one line naming it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = project(tmp_path, monkeypatch, "caption=wd_tagger",
                  "caption.model=SmilingWolf/wd-swinv2-tagger-v3")  # fmt: skip
    with pytest.raises(ModelSourceError) as err:
        caption.run(cfg)
    message = str(err.value)
    assert message.startswith("config key `caption.model` = 'SmilingWolf/wd-swinv2-tagger-v3'")
    assert "HF_HUB_OFFLINE" in message and "\n" not in message
