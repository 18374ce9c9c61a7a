"""Intake rules: transparency, orientation, bit depth, rejects with reasons, the prepare report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kshd.data.images import (
    ALPHA_SUFFIX,
    ImageRejected,
    alpha_path,
    flatten,
    load_image,
    resize_short_side,
    safe_stem,
)
from kshd.data.intake import EmptyInputError, prepare_folder

from .conftest import ROOT
from .helpers.settings import intake, intake_rules


def test_transparent_pixels_become_the_background_not_black(tmp_path):
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # transparent black, as drawing apps save
    img.paste((200, 10, 10, 255), (0, 0, 20, 40))
    img.save(tmp_path / "a.png")
    rgb = load_image(tmp_path / "a.png", intake_rules()).image
    assert rgb.mode == "RGB"
    assert rgb.getpixel((30, 5)) == (255, 255, 255)
    assert rgb.getpixel((5, 5)) == (200, 10, 10)
    grey = load_image(tmp_path / "a.png", intake_rules(background=[128, 128, 128])).image
    assert grey.getpixel((30, 5)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 40), "white")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg", intake_rules()).image.size == (40, 60)


def test_sixteen_bit_mid_grey_stays_mid_grey():
    img = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert abs(flatten(img, (255, 255, 255)).getpixel((0, 0))[0] - 128) <= 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"<html>not a picture</html>", "not an image"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageRejected, match=reason):
        load_image(tmp_path / "x.png", intake_rules())


def test_truncated_and_tiny_and_huge_are_rejected(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        load_image(tmp_path / "t.png", intake_rules())
    Image.new("RGB", (10, 10)).save(tmp_path / "s.png")
    with pytest.raises(ImageRejected, match="too small"):
        load_image(tmp_path / "s.png", intake_rules())
    with pytest.raises(
        ImageRejected, match="larger than prepare.max_pixels: 10x10 = 100 pixels, over 99"
    ):
        load_image(tmp_path / "s.png", intake_rules(min_side=1, max_pixels=99))


def test_resize_keeps_aspect_and_never_upscales_unless_asked():
    img = Image.new("RGB", (200, 100))
    assert resize_short_side(img, 50, upscale=False).size == (100, 50)
    assert resize_short_side(img, 400, upscale=False).size == (200, 100)
    assert resize_short_side(img, 400, upscale=True).size == (800, 400)


def test_safe_stem_keeps_hangul_and_drops_unsafe_characters():
    assert safe_stem("소녀 01 (final).png") == "소녀_01_final"
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("???.png") == "image"


def test_prepare_accounts_for_every_input(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in (ROOT / "data" / "samples").glob("*.png"):
        (raw / f.name).write_bytes(f.read_bytes())
    (raw / "copy.png").write_bytes((raw / "소녀_01.png").read_bytes())  # duplicate
    (raw / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (raw / "empty.jpg").write_bytes(b"")
    report = prepare_folder(raw, tmp_path / "out", **intake(resolution=64))
    assert report.inputs == 13
    assert report.inputs == report.accepted + len(report.rejected) + report.duplicates
    assert (report.accepted, report.duplicates) == (10, 1)
    assert {r["file"] for r in report.rejected} == {"broken.png", "empty.jpg"}
    files = sorted((tmp_path / "out").iterdir())
    outputs = [p for p in files if not p.name.endswith(ALPHA_SUFFIX)]
    assert len(outputs) == 10
    assert all(min(Image.open(p).size) == 64 and Image.open(p).mode == "RGB" for p in outputs)
    # the eight drawn on a transparent ground keep their alpha beside them, sized alike
    alphas = [alpha_path(p) for p in outputs if alpha_path(p).exists()]
    assert len(alphas) == 8 and len(files) == 18
    assert all(Image.open(a).mode == "L" for a in alphas)
    drawing_of = {alpha_path(p): p for p in outputs}
    assert all(Image.open(a).size == Image.open(drawing_of[a]).size for a in alphas)
    assert report.duplicate_of == [{"file": "소녀_01.png", "same_as": "copy.png"}]
    assert any(p.name.startswith("소녀_02-") for p in outputs)  # Hangul names stay readable
    json.dumps(report.to_dict())  # serialisable as prepare.json


def test_empty_or_missing_raw_folder_is_a_clear_error(tmp_path):
    """One line naming `data.raw_dir` and the ways in, not DVC's "No such file or directory"."""
    with pytest.raises(EmptyInputError, match="does not exist") as missing:
        prepare_folder(tmp_path / "nope", tmp_path / "out", **intake(resolution=64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyInputError, match="empty") as empty:
        prepare_folder(tmp_path / "empty", tmp_path / "out", **intake(resolution=64))
    for err in (missing, empty):
        text = str(err.value)
        assert "\n" not in text and "`data.raw_dir`" in text
        assert "cp -r /path/to/drawings/*" in text and "-S data.raw_dir=" in text


def test_a_fresh_clone_has_the_raw_folder_and_its_placeholder_is_no_drawing(tmp_path):
    """The README's first step copies drawings into data/raw/: the folder is in the repository
    (a hidden placeholder, as data/reg/), which prepare neither counts nor rejects."""
    import shutil
    import subprocess

    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "data/raw"], check=True,
                            capture_output=True, text=True).stdout.split()  # fmt: skip
    assert listed == ["data/raw/.gitkeep"]
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(ROOT / listed[0], raw)  # the folder as a fresh clone has it
    with pytest.raises(EmptyInputError, match=r"`data\.raw_dir`.*no drawings found"):
        prepare_folder(raw, tmp_path / "out", **intake(resolution=64))
    Image.new("RGB", (96, 80), "white").save(raw / "drawing.png")
    report = prepare_folder(raw, tmp_path / "out", **intake(resolution=64))
    assert (report.inputs, report.accepted, report.rejected) == (1, 1, [])


def test_a_picture_over_the_pixel_limit_is_said_to_be_so_not_corrupt(tmp_path):
    """The decompression-bomb guard names the limit's key, never 'truncated or corrupt'."""
    Image.new("1", (3000, 2000)).save(tmp_path / "wide.png")
    with pytest.raises(ImageRejected) as err:
        load_image(tmp_path / "wide.png", intake_rules(max_pixels=4_000_000))
    assert err.value.reason == ("larger than prepare.max_pixels: 3000x2000 = 6000000 pixels, "
                                "over 4000000 (a decompression-bomb guard)")  # fmt: skip
