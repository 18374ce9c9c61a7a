"""A caption cache keyed by image content and captioner settings, safe against being killed.

One JSON line per caption, appended and fsynced after every batch: a run killed at any point
keeps every finished batch, and a torn last line is ignored on reading. Adding 10 drawings to
5,700 captions 10.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class CaptionCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        torn = 0
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                    self.entries[item["key"]] = item["caption"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn += 1
        if torn:
            log.warning("%s: ignored %d incomplete line(s) (a killed run)", self.path, torn)

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def _ends_without_newline(self) -> bool:
        """A killed run may leave a torn last line; the next entry must start on its own line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def add(self, items: Mapping[str, str]) -> None:
        """Append and fsync: once this returns, the captions survive a kill."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"key": key, "caption": caption}, ensure_ascii=False) + "\n"
            for key, caption in items.items()
        )
        with self.path.open("a", encoding="utf-8") as f:
            # queued experiments (`dvc queue start -j 2`) share this file: one writer at a time
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if self._ends_without_newline():
                lines = "\n" + lines
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        self.entries.update(items)
