"""Captions on their way to training: the trigger phrase added, and info.csv written and read."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from kshd.config.errors import InputError
from kshd.fileio import write_text


def with_trigger(caption: str, trigger: str, position: str) -> str:
    """Add the trigger phrase at `position` (conf's `caption.trigger_position`; "end" is the
    original project's `<caption>, <trigger>`)."""
    if not trigger:
        return caption
    if not caption:
        return trigger
    if position == "start":
        return f"{trigger}, {caption}"
    if position == "end":
        return f"{caption}, {trigger}"
    raise ValueError(f"caption.trigger_position must be 'start' or 'end', not {position!r}")


def write_info_csv(path: str | Path, rows: Sequence[tuple[str, str]]) -> None:
    """Write `image,text` as UTF-8 CSV with RFC 4180 quoting (commas, quotes, newlines survive)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["image", "text"])
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_info_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read `image,text` rows; a missing column or a short row is an error naming the line."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["image", "text"]:
            raise InputError(
                f"{path}: the first line must be the header `image,text`, got {header}"
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0]:
                raise InputError(f"{path}: row {line_no} has no image or no text: {row}")
            rows.append((row[0], row[1]))
    return rows
