"""The reviewer's two lists: caption overrides (`image,text`) and exclusions (`image,reason`).

Both are small CSV files a person may also edit by hand (`image` = a drawing's raw file name or
its prepared name). A change is a read-modify-write under a file lock, written to a temporary
file and renamed over the list, so two studio tabs or a tab and `kshd captions` editing at
once lose nothing and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from kshd.config.errors import InputError
from kshd.fileio import write_text

ITEMS_FILE = "caption_items.json"  # the caption stage's per-drawing file, in data.reports_dir
OVERRIDES_HEADER = ("image", "text")
EXCLUSIONS_HEADER = ("image", "reason")
LOCK_TIMEOUT_S = 60  # a writer holds the lock for one small file's rewrite

Rows = list[tuple[str, str]]


def read_rows(path: str | Path, header: tuple[str, str]) -> Rows:
    """The rows of a two-column list (the second column may be empty or absent); a missing
    file is an empty list. A wrong header or a row without a name is refused by line."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None:
            return []
        if [h.strip() for h in first[:2]] != list(header):
            raise InputError(
                f"{path}: the first line must be the header `{','.join(header)}`, got {first}"
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if not row[0].strip():
                raise InputError(f"{path}: row {line_no} names no drawing: {row}")
            rows.append((row[0].strip(), row[1].strip() if len(row) > 1 else ""))
    return rows


def write_rows(path: str | Path, header: tuple[str, str], rows: Rows) -> None:
    """UTF-8 CSV, RFC 4180 quoting, written atomically (the caption stage reads it as is)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def lock_path(path: str | Path) -> Path:
    """The lock beside the list, hidden: `data/.caption_overrides.csv.lock`."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the list's lock (between processes and between threads of one process)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path), timeout=LOCK_TIMEOUT_S, thread_local=False):
        yield


def update_rows(
    path: str | Path, header: tuple[str, str], change: Callable[[Rows], Rows]
) -> tuple[Rows, Rows]:
    """Read, `change`, write back: all under the lock. Returns (before, after); nothing is
    written when they are equal."""
    with locked(path):
        before = read_rows(path, header)
        after = change(list(before))
        if after != before:
            write_rows(path, header, after)
    return before, after


def read_exclusions(path: str | Path) -> dict[str, str]:
    """Excluded drawings by raw or prepared name -> the reason given (may be empty)."""
    return dict(read_rows(path, EXCLUSIONS_HEADER))
