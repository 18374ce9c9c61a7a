"""A small prepared corpus on disk: ten coloured squares and their info.csv."""

from __future__ import annotations

from PIL import Image

from kshd.data.captioning import write_info_csv


def small_corpus(tmp_path, n=10):
    """n 16 px drawings in tmp_path/prepared/ with captions ending in the trigger phrase."""
    (tmp_path / "prepared").mkdir()
    rows = []
    for i in range(n):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(tmp_path / "prepared" / f"{i}.png")
        rows.append((f"prepared/{i}.png", f"drawing {i}, drawn by KSH drawing style"))
    write_info_csv(tmp_path / "info.csv", rows)
    return rows
