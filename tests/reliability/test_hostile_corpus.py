"""prepare on a hostile folder: every file accounted for, with the right reason."""

from __future__ import annotations

import pytest
from PIL import Image

from kshd.data.intake import prepare_folder

from ..helpers.settings import intake
from .corpus import ACCEPT, CASES, DUPLICATE, ORIENTED_CORNER, build_corpus


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    expected = build_corpus(root / "raw")
    report = prepare_folder(root / "raw", root / "out", **intake(resolution=64, min_side=32))
    return root, expected, report


def test_corpus_is_big_enough():
    assert len(CASES) >= 25


def test_every_input_is_accounted_for(prepared):
    _, expected, report = prepared
    assert report.inputs == len(expected)
    assert report.inputs == report.accepted + len(report.rejected) + report.duplicates
    accepted = {i["file"] for i in report.images}
    duplicates = {d["file"] for d in report.duplicate_of}
    rejected = {r["file"]: r["reason"] for r in report.rejected}
    assert accepted == {f for f, e in expected.items() if e == ACCEPT}
    assert duplicates == {f for f, e in expected.items() if e == DUPLICATE}
    for f, words in expected.items():
        if words not in (ACCEPT, DUPLICATE):
            assert words in rejected.get(f, ""), f"{f}: expected '{words}', got {rejected.get(f)}"
    assert report.animated == ["anim.gif", "anim.webp"] and report.sidecars == ["photo.txt"]


def _out(prepared, name: str) -> Image.Image:
    root, _, report = prepared
    [item] = [i for i in report.images if i["file"] == name]
    return Image.open(root / "out" / item["output"])


def test_accepted_images_look_right(prepared):
    img = _out(prepared, "소녀 그림 (1).png")
    assert img.mode == "RGB" and img.size == (64, 64)
    assert img.getpixel((60, 30)) == (255, 255, 255)  # transparent -> white, not black
    assert _out(prepared, "palette.png").getpixel((60, 30)) == (255, 255, 255)
    assert _out(prepared, "palette.png").getpixel((2, 30))[0] > 200  # red stays red
    assert _out(prepared, "rotated.jpg").size == (64, 128)  # 200x100 turned upright, short = 64
    assert abs(_out(prepared, "grey16.png").getpixel((5, 5))[0] - 128) <= 1
    cyan = _out(prepared, "cmyk.jpg").getpixel((5, 5))
    assert cyan[0] < 40 and cyan[1] > 200 and cyan[2] > 200
    assert _out(prepared, "grey_alpha.png").getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("orientation", sorted(ORIENTED_CORNER))
def test_every_exif_orientation_is_turned_upright(prepared, orientation):
    img = _out(prepared, f"orient_{orientation}.jpg")
    assert img.size == ((64, 128) if orientation >= 5 else (128, 64))
    w, h = img.size
    corners = {
        "top-left": (4, 4),
        "top-right": (w - 5, 4),
        "bottom-left": (4, h - 5),
        "bottom-right": (w - 5, h - 5),
    }
    for name, xy in corners.items():
        red = img.getpixel(xy)[0] > 150 and img.getpixel(xy)[1] < 80
        assert red == (name == ORIENTED_CORNER[orientation]), (name, img.getpixel(xy))


def test_output_names_are_safe_and_keep_the_original_readable(prepared):
    _, _, report = prepared
    names = [i["output"] for i in report.images]
    assert len(set(names)) == len(names)
    assert all(" " not in n and "/" not in n and "(" not in n for n in names)
    assert any(n.startswith("소녀_그림_1-") for n in names)


def test_rerun_keeps_finished_outputs_and_drops_stale_ones(prepared, tmp_path):
    root, _, report = prepared
    out = root / "out"
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "stale-0000000000.png").write_bytes(b"old")
    again = prepare_folder(root / "raw", out, **intake(resolution=64, min_side=32))
    assert again.to_dict() == report.to_dict()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
