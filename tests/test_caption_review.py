"""Caption review (kshd.data.caption_review and `kshd captions`): the current captions are the
caption stage's per-drawing file with the overrides and exclusions laid over it; every edit
lands in those lists atomically, other rows kept, whole tags only, and two writers at once
lose nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from kshd.config.compose import compose_conf, write_params
from kshd.config.errors import InputError
from kshd.data import caption_review as review
from kshd.data.caption_lists import (
    EXCLUSIONS_HEADER,
    OVERRIDES_HEADER,
    read_exclusions,
    read_rows,
    update_rows,
)
from kshd.data.caption_sources import read_overrides

from .conftest import ROOT
from .helpers.inprocess import kshd_here

TRIGGER = "drawn by KSH drawing style"
MADE = [  # what a caption run wrote (caption_items.json), captions without the trigger
    ("a.png", "a-0001.png", "1girl, long hair, smile", "blip2_new", "train"),
    ("b.png", "b-0002.png", "1girl, hair, umbrella", "sidecar", "train"),
    ("sub/c.png", "sub_c-0003.png", "1boy, Smile, smile", "override", "train"),
    ("r.png", "reg/r-0004.png", "1girl, school uniform", "blip2_cached", "reg"),
]


def write_items(reports: Path) -> None:
    drawings = [
        {"file": f, "output": o, "caption": c, "source": s, "split": sp, "excluded": False}
        for f, o, c, s, sp in MADE
    ]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "caption_items.json").write_text(json.dumps({"drawings": drawings}), "utf-8")


@pytest.fixture
def files(tmp_path) -> review.ReviewFiles:
    """A workspace after one caption run: the items file, an overrides CSV with a row of its
    own (sub/c.png's) and one for a drawing no longer there."""
    write_items(tmp_path / "reports")
    overrides = tmp_path / "caption_overrides.csv"
    overrides.write_text(
        'image,text\r\ngone.png,"kept, as is"\r\nsub/c.png,"1boy, Smile, smile"\r\n', "utf-8"
    )
    return review.ReviewFiles(
        items=tmp_path / "reports" / "caption_items.json",
        overrides=overrides,
        exclusions=tmp_path / "caption_exclusions.csv",
        prepared=tmp_path / "prepared",
        trigger=TRIGGER,
    )


def captions(files) -> dict[str, str]:
    return {d.file: d.caption for d in review.load(files)}


def test_set_writes_one_override_row_keeps_the_others_and_reads_back(files):
    """By raw or prepared name; the trigger phrase pasted as a tag of its own is dropped; the
    stage's reader sees the row; the drawing shows as an edited override."""
    review.set_caption(files, "b-0002.png", f'a girl, "quoted", {TRIGGER}')
    review.set_caption(files, "a.png", "1girl,   smile ")
    assert read_rows(files.overrides, OVERRIDES_HEADER) == [
        ("gone.png", "kept, as is"),
        ("sub/c.png", "1boy, Smile, smile"),
        ("b.png", 'a girl, "quoted"'),
        ("a.png", "1girl, smile"),
    ]
    assert read_overrides(files.overrides)["b.png"] == 'a girl, "quoted"'
    b = review.find(review.load(files), "b.png")
    assert (b.caption, b.source, b.edited) == ('a girl, "quoted"', "override", True)
    review.set_caption(files, "b.png", "a girl")  # its row again: replaced in place
    rows = read_rows(files.overrides, OVERRIDES_HEADER)
    assert rows[2] == ("b.png", "a girl") and len(rows) == 4


def test_an_unknown_name_or_the_trigger_inside_a_tag_is_refused_in_one_line(files):
    before = files.overrides.read_bytes()
    with pytest.raises(InputError, match=r"'nope\.png'.*kshd captions list") as err:
        review.set_caption(files, "nope.png", "x")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="trigger phrase"):
        review.set_caption(files, "a.png", f"a girl {TRIGGER}")
    with pytest.raises(InputError, match="trigger phrase"):
        review.replace_tag(files, "smile", TRIGGER)
    assert files.overrides.read_bytes() == before


def test_replace_and_remove_match_whole_tags_case_sensitively(files):
    """`hair` is not part of `long hair`, `Smile` is not `smile`; only changed drawings get a
    row; a caption that had the new tag keeps it once."""
    change = review.replace_tag(files, "smile", "grin")
    assert sorted(change.files) == ["a.png", "sub/c.png"]
    assert captions(files) == {
        "a.png": "1girl, long hair, grin",
        "b.png": "1girl, hair, umbrella",
        "sub/c.png": "1boy, Smile, grin",
        "r.png": "1girl, school uniform",
    }
    assert [r[0] for r in read_rows(files.overrides, OVERRIDES_HEADER)] == [
        "gone.png", "sub/c.png", "a.png"
    ]  # fmt: skip
    review.replace_tag(files, "Smile", "grin")
    assert captions(files)["sub/c.png"] == "1boy, grin"
    change = review.remove_tag(files, "hair")
    assert change.files == ("b.png",)
    assert captions(files)["b.png"] == "1girl, umbrella"
    assert captions(files)["a.png"] == "1girl, long hair, grin"
    assert review.remove_tag(files, "no such tag").files == ()


def test_exclude_and_include_round_trip_with_the_reason(files):
    review.exclude(files, "sub_c-0003.png", reason="a near   copy")
    review.exclude(files, "r.png")
    assert read_exclusions(files.exclusions) == {"sub/c.png": "a near copy", "r.png": ""}
    shown = {d.file: (d.excluded, d.reason) for d in review.load(files)}
    assert shown["sub/c.png"] == (True, "a near copy") and shown["a.png"] == (False, "")
    assert dict(review.tag_counts(review.load(files)))["1girl"] == 2  # r.png excluded
    review.include(files, "sub/c.png")
    assert read_rows(files.exclusions, EXCLUSIONS_HEADER) == [("r.png", "")]
    assert review.include(files, "a.png").files == ()


def test_tag_table_counts_each_drawing_once_most_frequent_first(files):
    counts = review.tag_counts(review.load(files))
    assert counts[0] == ("1girl", 3)
    assert dict(counts)["smile"] == 2 and dict(counts)["Smile"] == 1
    assert [d.file for d in review.select(review.load(files), tag="hair")] == ["b.png"]
    assert [d.file for d in review.select(review.load(files), source="blip2")] == ["a.png", "r.png"]
    assert [d.file for d in review.select(review.load(files), text="UMBRELLA")] == ["b.png"]


def test_no_caption_report_is_said_in_one_line(tmp_path):
    files = review.ReviewFiles(tmp_path / "none.json", tmp_path / "o.csv", tmp_path / "e.csv",
                               tmp_path, TRIGGER)  # fmt: skip
    with pytest.raises(review.NoCaptionReport, match="dvc repro"):
        review.load(files)


def test_a_failed_write_leaves_the_list_as_it_was(files, monkeypatch):
    """The list is replaced by a complete temporary file or not at all."""
    import kshd.fileio

    before = files.overrides.read_bytes()

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kshd.fileio.os, "replace", broken)
    with pytest.raises(OSError, match="could not be written"):
        review.set_caption(files, "a.png", "new")
    assert files.overrides.read_bytes() == before
    assert sorted(p.name for p in files.overrides.parent.glob(".*.tmp")) == []


def test_two_writers_at_once_lose_no_row(tmp_path):
    """Two threads, each with its own lock object (a file lock, as two processes hold), each
    appending 60 different rows by read-modify-write: all 120 are there after."""
    path = tmp_path / "caption_overrides.csv"

    def writer(k: int) -> None:
        for i in range(60):
            update_rows(path, OVERRIDES_HEADER, lambda rows, i=i: [*rows, (f"{k}-{i}.png", "x")])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [name for name, _ in read_rows(path, OVERRIDES_HEADER)]
    assert len(names) == 120 and set(names) == {f"{k}-{i}.png" for k in (0, 1) for i in range(60)}


def test_two_processes_setting_captions_at_once_lose_nothing(tmp_path):
    """Two `kshd captions`-like processes through the library, each setting 40 drawings' captions
    while the other does: every caption is in the overrides after."""
    import subprocess
    import sys

    drawings = [
        {"file": f"d{i}.png", "output": f"d{i}-x.png", "caption": "old", "source": "sidecar",
         "split": "train", "excluded": False} for i in range(80)
    ]  # fmt: skip
    (tmp_path / "caption_items.json").write_text(json.dumps({"drawings": drawings}), "utf-8")
    script = (
        "import sys; from pathlib import Path; from kshd.data import caption_review as r\n"
        "t = Path(sys.argv[1]); k = int(sys.argv[2])\n"
        "f = r.ReviewFiles(t / 'caption_items.json', t / 'o.csv', t / 'e.csv', t, 'trig')\n"
        "for i in range(k, 80, 2): r.set_caption(f, f'd{i}.png', f'new {i}')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(k)]) for k in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = dict(read_rows(tmp_path / "o.csv", OVERRIDES_HEADER))
    assert rows == {f"d{i}.png": f"new {i}" for i in range(80)}


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A workspace as `kshd captions` finds it: params.yaml (caption=none), the items file."""
    write_params(compose_conf(["caption=none"], conf_dir=ROOT / "conf"), tmp_path / "params.yaml")
    write_items(tmp_path / "data" / "reports")
    return tmp_path


def test_cli_edits_land_in_the_workspace_lists(workspace, capsys):
    ran = kshd_here(["captions", "set", "a.png", "1girl, frown"], capsys, workspace)
    assert ran.returncode == 0 and "dvc repro" in ran.stderr
    assert (
        kshd_here(["captions", "replace-tag", "1girl", "solo"], capsys, workspace).returncode == 0
    )
    assert kshd_here(["captions", "exclude", "b.png", "--reason", "blurry"], capsys,
                     workspace).returncode == 0  # fmt: skip
    overrides = read_overrides(workspace / "data" / "caption_overrides.csv")
    assert overrides["a.png"] == "solo, frown" and overrides["r.png"] == "solo, school uniform"
    assert read_exclusions(workspace / "data" / "caption_exclusions.csv") == {"b.png": "blurry"}
    listed = kshd_here(["captions", "list", "--tag", "solo"], capsys, workspace)
    assert "a.png" in listed.stderr and "solo, frown" in listed.stderr
    assert "b.png" in listed.stderr and "[excluded edited]" in listed.stderr
    tags = kshd_here(["captions", "tags", "--top", "1"], capsys, workspace).stderr
    assert "solo  2" in tags  # b.png is excluded


def test_cli_bad_input_is_one_line_and_exit_code_2(workspace, capsys):
    ran = kshd_here(["captions", "set", "missing.png", "x"], capsys, workspace)
    assert ran.returncode == 2
    errors = [line for line in ran.stderr.splitlines() if "missing.png" in line]
    assert len(errors) == 1 and "kshd captions list" in errors[0]
    (workspace / "data" / "reports" / "caption_items.json").unlink()
    ran = kshd_here(["captions", "list"], capsys, workspace)
    assert ran.returncode == 2 and "no caption report yet" in ran.stderr
