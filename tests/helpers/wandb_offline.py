"""Read an offline wandb run (`run-<id>.wandb`) without an account or a server.

The file is a LevelDB-style log (32 KiB blocks of checksummed FULL/FIRST/MIDDLE/LAST chunks) of
wandb's protobuf `Record`s. Tests use this to check what a stage logged, and the comparison page
can use it to show runs that were never synced.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = 7  # checksum (4) + length (2) + type (1); the file header is also 7 bytes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file (no :W&B header)")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:
            break


def _items(items) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def read_offline_run(path: str | Path) -> OfflineRun:
    """Run metadata, config, history rows and summary from one `.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    run = OfflineRun(path)
    for payload in _payloads(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run  # a later run record may repeat it with blanks: keep what is set
            run.run_id = r.run_id or run.run_id
            run.name = r.display_name or run.name
            run.group = r.run_group or run.group
            run.job_type = r.job_type or run.job_type
            run.config.update(_items(r.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
    run.config = {
        k: v.get("value", v) if isinstance(v, dict) else v
        for k, v in run.config.items()
        if not k.startswith("_")
    }
    return run


def find_offline_runs(wandb_dir: str | Path) -> list[OfflineRun]:
    return [read_offline_run(p) for p in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))]
