"""Captions: sources in order, a cache that survives SIGKILL, incremental reruns."""

from __future__ import annotations

import json

import pytest

from kshd.captioners.registry import caption_identity
from kshd.config.compose import defaults
from kshd.data.caption_cache import CaptionCache
from kshd.data.caption_sources import (
    OVERRIDE,
    SIDECAR,
    Item,
    assign_captions,
    cached_source,
    new_source,
)
from kshd.data.captioning import read_info_csv

from .helpers.events import stop_at
from .helpers.inprocess import run_stage_here
from .stage_project import make_project, noise_drawings, stage_env

TRIGGER = "drawn by KSH drawing style"


def test_cache_ignores_a_torn_line_and_appends_after_it(tmp_path):
    path = tmp_path / "c.jsonl"
    CaptionCache(path).add({"a": "one", "b": "two"})
    with path.open("a") as f:
        f.write('{"key": "c", "capt')  # killed mid-write
    cache = CaptionCache(path)
    assert cache.entries == {"a": "one", "b": "two"}
    cache.add({"d": "four"})
    assert CaptionCache(path).entries == {"a": "one", "b": "two", "d": "four"}


def test_sources_in_order_and_blip2_not_loaded_when_nothing_is_left(tmp_path):
    (tmp_path / "b.txt").write_text("\ufeffa girl  reading\n", encoding="utf-8")
    settings = defaults("caption", model=str(tmp_path / "no-such-model"))
    cache = CaptionCache(tmp_path / "c.jsonl")
    cache.add({f"{caption_identity(settings)}:d3": "cached caption"})
    items = [
        Item("a.png", "a.png", "d1"),
        Item("b.png", "b.png", "d2"),
        Item("c.png", "c.png", "d3"),
    ]
    overrides = {"a.png": "reviewed caption", "gone.png": "x"}
    out = assign_captions(items, tmp_path, overrides, settings, cache)  # loads no model
    assert [(i.caption, i.source) for i in out.items] == [
        ("reviewed caption", OVERRIDE),
        ("a girl reading", SIDECAR),
        ("cached caption", cached_source("blip2")),
    ]
    assert out.unmatched_overrides == ["gone.png"]


@pytest.fixture
def project(tmp_path, tiny_models):
    # the real setup's overrides file (the demo profile points at the samples' captions)
    overrides = ["caption.overrides=data/caption_overrides.csv"]
    root = make_project(
        tmp_path / "p",
        tiny_models,
        ["caption.batch_size=1", "caption.max_new_tokens=24", *overrides],
    )
    noise_drawings(root / "raw", 40)
    run_stage_here(root, "prepare")
    return root


def _report(root):
    return json.loads((root / "data/reports/captions.json").read_text(encoding="utf-8"))


def _cache_lines(root) -> list[str]:
    path = root / "data/cache/captions.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.mark.slow
def test_killed_caption_run_resumes_without_recaptioning(project, tmp_path, tiny_models):
    """Killed in its own process after the third caption; the rerun and the uninterrupted run
    (in this one) caption the rest and write the same info.csv."""
    stop_at(project, "caption", "SIGKILL", "progress:caption:3", stage_env())  # batches of 1
    done = len({json.loads(x)["key"] for x in _cache_lines(project)})
    assert done == 3, f"the kill should land after the third caption, {done} of 40 were done"
    assert not (project / "data/info.csv").exists()  # never half-written under its name
    run_stage_here(project, "caption")
    assert _report(project)["captioned_now"] == 40 - done
    assert _report(project)["sources"] == {
        "override": 0,
        "sidecar": 0,
        "blip2_cached": done,
        "blip2_new": 40 - done,
    }
    keys = [json.loads(x)["key"] for x in _cache_lines(project)]
    assert len(keys) == len(set(keys)) == 40  # nothing captioned twice
    straight = make_project(
        tmp_path / "straight", tiny_models, ["caption.batch_size=1", "caption.max_new_tokens=24"]
    )
    noise_drawings(straight / "raw", 40)
    run_stage_here(straight, "prepare")
    run_stage_here(straight, "caption")
    assert read_info_csv(project / "data/info.csv") == read_info_csv(straight / "data/info.csv")


@pytest.mark.slow
def test_adding_one_drawing_captions_exactly_one(project):
    run_stage_here(project, "caption")
    first = read_info_csv(project / "data/info.csv")
    assert _report(project)["captioned_now"] == 40
    assert all(text.endswith(TRIGGER) for _, text in first)
    noise_drawings(project / "raw", 1, start=40)
    run_stage_here(project, "prepare")
    run_stage_here(project, "caption")
    report = _report(project)
    assert report["captioned_now"] == 1 and report["sources"]["blip2_cached"] == 40
    second = read_info_csv(project / "data/info.csv")
    assert len(second) == 41 and set(first) <= set(second)


@pytest.mark.slow
def test_sidecar_and_override_win_and_report_counts(project):
    raw = project / "raw"
    (raw / "drawing_000.txt").write_text("a girl with a red umbrella", encoding="utf-8")
    (project / "data").mkdir(exist_ok=True)
    (project / "data/caption_overrides.csv").write_text(
        'image,text\r\ndrawing_001.png,"a boy, reviewed ""by hand"""\r\n', encoding="utf-8"
    )
    run_stage_here(project, "prepare")
    run_stage_here(project, "caption")
    rows = dict(read_info_csv(project / "data/info.csv"))
    by_name = {k.split("/")[-1].rsplit("-", 1)[0]: v for k, v in rows.items()}
    assert by_name["drawing_000"] == f"a girl with a red umbrella, {TRIGGER}"
    assert by_name["drawing_001"] == f'a boy, reviewed "by hand", {TRIGGER}'
    report = _report(project)
    assert report["sources"][SIDECAR] == 1 and report["sources"][OVERRIDE] == 1
    assert report["sources"][new_source("blip2")] == 38
    assert report["length_words"]["max"] >= report["length_words"]["min"]
