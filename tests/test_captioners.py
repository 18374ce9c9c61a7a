"""The captioner seam behind `caption.kind`: a captioner registered from one file (this one)
runs through the caption stage, its captions in info.csv with the trigger and in the cache under
its identity; `caption=none` takes captions from overrides and sidecars alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from kshd.captioners.base import Captioner, captioners, register_captioner
from kshd.captioners.registry import BUILT_IN, caption_identity, captioner_class
from kshd.config.compose import compose_conf, with_values
from kshd.config.errors import ConfigError
from kshd.config.fill import DEFINES_RESULT, register_variant, variants
from kshd.config.schema import ProjectConfig
from kshd.config.schema_caption import CaptionSettings
from kshd.data.caption_cache import CaptionCache
from kshd.data.captioning import read_info_csv
from kshd.stages import caption, prepare

from .conftest import ROOT
from .stage_project import noise_drawings

TRIGGER = "drawn by KSH drawing style"


@register_variant(CaptionSettings, "colour_namer")
@dataclass(frozen=True)
class ColourNamerSettings(CaptionSettings):
    """A throwaway kind: names each drawing's mean colour after a word of its own."""

    word: str = field(metadata=DEFINES_RESULT)


@register_captioner(ColourNamerSettings)
class ColourNamer(Captioner):
    made: list[ColourNamer] = []  # every one made: a captioner is made only when needed

    def __init__(self, settings: ColourNamerSettings):
        super().__init__(settings)
        self.batches: list[int] = []
        ColourNamer.made.append(self)

    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        self.batches.append(len(images))
        return [f"{self.settings.word} {describe(img)}" for img in images]

    @classmethod
    def place_trigger(cls, settings: ColourNamerSettings, caption: str) -> str:
        return f"{settings.trigger_phrase}: {caption}"  # its own slot, whatever the position


def describe(img: Image.Image) -> str:
    """The drawing's size and mean colour, as the throwaway captioner sees it."""
    r, g, b = (round(sum(c) / len(c)) for c in zip(*img.getdata(), strict=True))
    return f"{img.width}x{img.height} rgb {r} {g} {b}"


def project(root: Path, monkeypatch, caption_node: dict | None, *overrides: str) -> ProjectConfig:
    """The demo profile in `root` (relative paths, tracking off), 5 noise drawings prepared;
    `caption_node` replaces the caption group (a kind conf/ has no YAML for)."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    cfg = compose_conf(
        ["+experiment=demo", "data.raw_dir=raw", "tracking.mode=disabled", *overrides],
        conf_dir=ROOT / "conf",
    )
    if caption_node is not None:
        cfg = with_values(cfg, {"caption": caption_node})
    (root / "raw").mkdir()
    noise_drawings(root / "raw", 5)
    prepare.run(cfg)
    return cfg


def colour_node(batch_size: int) -> dict:
    return {"kind": "colour_namer", "word": "swatch", "batch_size": batch_size,
            "trigger_phrase": TRIGGER, "trigger_position": "end",
            "overrides": "data/caption_overrides.csv",
            "exclusions": "data/caption_exclusions.csv"}  # fmt: skip


def prepared_drawings(cfg: ProjectConfig) -> dict[str, dict]:
    report = json.loads(Path(cfg.data.reports_dir, "prepare.json").read_text(encoding="utf-8"))
    return {i["file"]: i for i in report["images"]}


def test_a_captioner_registered_from_one_file_runs_through_the_caption_stage(tmp_path, monkeypatch):
    """A kind defined in this file alone: made once, only for what no sidecar covers, fed RGB
    images in batches; its captions reach info.csv with the trigger where it places it and the
    cache under its identity (kind and marked fields, not the batch size); a rerun makes none."""
    ColourNamer.made.clear()
    cfg = project(tmp_path, monkeypatch, colour_node(batch_size=2))
    (tmp_path / "raw/drawing_004.txt").write_text("a reviewed sidecar", encoding="utf-8")
    prepare.run(cfg)  # the sidecar travels with its drawing
    report = caption.run(cfg)

    [namer] = ColourNamer.made
    assert namer.batches == [2, 2]  # the four drawings no sidecar covers, in batches of 2
    drawings = prepared_drawings(cfg)
    prepared = Path(cfg.data.prepared_dir)
    expected = {  # by prepared file
        d["output"]: "a reviewed sidecar"
        if name == "drawing_004.png"
        else f"swatch {describe(Image.open(prepared / d['output']).convert('RGB'))}"
        for name, d in drawings.items()
    }
    rows = read_info_csv(cfg.data.info_csv)
    assert {Path(image).name: text for image, text in rows} == {
        output: f"{TRIGGER}: {text}" for output, text in expected.items()
    }  # the captioner placed the trigger, in its captions and the sidecar's alike
    settings = ColourNamerSettings(**colour_node(2))
    identity = caption_identity(settings)
    assert identity.startswith("colour_namer-") and identity != caption_identity(
        ColourNamerSettings(**{**colour_node(2), "word": "patch"})
    )  # a marked field is in the identity
    assert caption_identity(ColourNamerSettings(**colour_node(3))) == identity  # batch size not
    cache = CaptionCache(tmp_path / "data/cache/captions.jsonl")
    assert cache.entries == {
        f"{identity}:{d['digest']}": expected[d["output"]]
        for name, d in drawings.items()
        if name != "drawing_004.png"
    }
    assert report["sources"] == {"override": 0, "sidecar": 1, "colour_namer_cached": 0,
                                 "colour_namer_new": 4}  # fmt: skip
    assert report["captioner"] == "colour_namer" and report["settings_fingerprint"] == identity

    ColourNamer.made.clear()  # a rerun with another batch size: all cached, nothing made
    again = caption.run(with_values(cfg, {"caption.batch_size": 3}))
    assert ColourNamer.made == [] and again["captioned_now"] == 0
    assert again["sources"]["colour_namer_cached"] == 4
    assert read_info_csv(cfg.data.info_csv) == rows


def test_caption_none_takes_overrides_and_sidecars_and_names_the_drawings_left_empty(
    tmp_path, monkeypatch, caplog
):
    """No model is checked or loaded (the demo's tiny BLIP-2 is absent here); a drawing with
    neither source trains on the trigger phrase alone and is named, as kohya trains an image
    without a caption file."""
    cfg = project(tmp_path, monkeypatch, None, "caption=none",
                  "caption.overrides=data/caption_overrides.csv")  # fmt: skip
    assert not Path(cfg.tiny.dir).exists()
    (tmp_path / "raw/drawing_000.txt").write_text("a girl  with an umbrella\n", encoding="utf-8")
    (tmp_path / "data/caption_overrides.csv").write_text(
        "image,text\r\ndrawing_001.png,a reviewed caption\r\n", encoding="utf-8"
    )
    prepare.run(cfg)
    with caplog.at_level(logging.WARNING, logger="kshd.stages.caption"):
        report = caption.run(cfg)
    rows = {image.split("/")[-1].rsplit("-", 1)[0]: text
            for image, text in read_info_csv(cfg.data.info_csv)}  # fmt: skip
    assert rows == {
        "drawing_000": f"a girl with an umbrella, {TRIGGER}",
        "drawing_001": f"a reviewed caption, {TRIGGER}",
        **{f"drawing_00{i}": TRIGGER for i in (2, 3, 4)},
    }
    assert report["empty"] == ["drawing_002.png", "drawing_003.png", "drawing_004.png"]
    assert report["sources"] == {"override": 1, "sidecar": 1, "none_cached": 0, "none_new": 3}
    assert report["captioner"] == "none" and report["model"] is None
    [warning] = [r.getMessage() for r in caplog.records if "empty caption" in r.getMessage()]
    assert "3 drawings" in warning and "drawing_002.png" in warning
    assert "data/caption_overrides.csv" in warning and "\n" not in warning


def test_setting_the_kind_alone_says_to_choose_the_group(tmp_path):
    """`caption.kind=none` keeps BLIP-2's keys: one line saying to choose `caption=none`."""
    with pytest.raises(ConfigError) as err:
        compose_conf(["caption.kind=none"], conf_dir=ROOT / "conf")
    assert str(err.value).startswith("config key `caption.model` is unknown: `caption.kind` = "
                                      "'none' has no such key")  # fmt: skip
    assert "`caption=none`" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^config key `caption\.kind` = 'tagger' is not valid"):
        compose_conf(["caption.kind=tagger"], conf_dir=ROOT / "conf")


@pytest.mark.parametrize("captioner", BUILT_IN, ids=lambda c: c.__name__)
def test_each_built_in_captioner_has_its_kind_and_conf_file(captioner):
    """A built-in kind is chosen as `caption=<kind>`: conf/caption/<kind>.yaml composes to
    settings whose captioner is this one."""
    [kind] = [k for k, c in variants(CaptionSettings).items() if captioners().get(c) is captioner]
    settings = compose_conf([f"caption={kind}"], conf_dir=ROOT / "conf").caption
    assert settings.kind == kind and captioner_class(settings) is captioner
