"""Training checkpoints that can be trusted: complete or invisible, resumed only by their own run.

A checkpoint is written into a hidden temp folder and renamed to `checkpoint-<step>` when every
file is in place; `state.json` is written last, so a folder without it is never picked up. Old
checkpoints are pruned only after a new one is complete. The state holds the LoRA weights, the
optimizer and scheduler, fp16's gradient scaler, every RNG, the step, the epoch and the position
in it, a fingerprint of what defines the run, so that `persist: true` folders of other
experiments are never resumed, and the adapter's record (its kind, rank and alpha), so that the
app and the evaluation load the tensors without the run's config. With `train.ema_decay`, the
EMA of the adapter's weights beside its tensors, in the same format (`ema.safetensors`), and its
settings in the state.
Everything is safetensors + JSON: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kshd.config.errors import UserError
from kshd.fileio import WriteError, write_errno

log = logging.getLogger(__name__)

NAME = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.json"
TENSORS = "lora.safetensors"  # the adapter's tensors (its name from when LoRA was the only kind)
EMA_TENSORS = "ema.safetensors"  # their moving average (train.ema_decay), in the same format


@dataclass
class Progress:
    """Where training stands: enough to continue exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    images: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class EmaWeights:
    """The EMA's tensors (in the adapter's format, as `TENSORS`) and its settings."""

    tensors: dict[str, torch.Tensor]
    record: dict


def fingerprint(**parts: object) -> str:
    """A stable hash of what defines a run (settings, dataset, base model)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _optimizer_split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint, oldest first; temp folders are not listed."""
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := NAME.match(p.name)) and (p / STATE).is_file()
    ]
    return sorted(found)


def prune(root: Path, limit: int | None) -> None:
    """Keep the newest `limit` complete checkpoints; clear half-written ones of killed runs."""
    for p in root.glob(".checkpoint-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
    done = complete_checkpoints(root)
    if limit and len(done) > limit:
        for _, path in done[:-limit]:
            shutil.rmtree(path)
            log.info("removed old checkpoint %s (checkpoints_total_limit=%d)", path.name, limit)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    run_fp: str,
    progress: Progress,
    lora: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    limit: int | None,
    scaler_state: dict | None = None,
    adapter: dict | None = None,
    ema: EmaWeights | None = None,
) -> Path:
    """Write everything to a temp folder, then rename it into place; prune afterwards.

    `scaler_state` is fp16's GradScaler (its scale and growth tracker): without it a resumed
    run would start from the initial scale and skip or scale steps unlike the straight run.
    `adapter`: the adapter's record (`Adapter.record()`); `ema`: the EMA, when one is kept."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{progress.step}"
    tmp = root / f".checkpoint-{progress.step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, run_fp, progress, lora, optimizer_state, scheduler_state,
                          scaler_state, adapter, ema)  # fmt: skip
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if code := write_errno(err):
            raise WriteError(final, code, "the earlier checkpoints are kept") from err
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(root, limit)
    log.info("checkpoint %s saved", final)
    return final


def _write_checkpoint(
    tmp: Path,
    run_fp: str,
    progress: Progress,
    lora: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    scaler_state: dict | None = None,
    adapter: dict | None = None,
    ema: EmaWeights | None = None,
) -> None:
    opt_tensors, opt_meta = _optimizer_split(optimizer_state)
    rng_tensors, rng_meta = _rng_state()
    save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / TENSORS))
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.tensors.items()}, str(tmp / EMA_TENSORS))
    save_file({**opt_tensors, **rng_tensors}, str(tmp / "training_state.safetensors"))
    state = {
        "fingerprint": run_fp,
        "progress": asdict(progress),
        "optimizer": opt_meta,
        "scheduler": scheduler_state,
        "rng": rng_meta,
        "scaler": scaler_state,  # plain numbers (scale, growth tracker, factors) or null
        "adapter": adapter,  # kind, rank, alpha, settings; absent from older checkpoints
    }
    if ema is not None:  # the EMA's settings; without one, the state is as it always was
        state["ema"] = ema.record
    with (tmp / STATE).open("w", encoding="utf-8") as f:  # last: marks the folder complete
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


@dataclass
class Loaded:
    path: Path
    progress: Progress
    lora: dict[str, torch.Tensor]
    optimizer_state: dict
    scheduler_state: dict
    scaler_state: dict | None = None
    ema: EmaWeights | None = None  # None: the run kept no EMA


def load_checkpoint(path: Path) -> Loaded:
    """Read a checkpoint and restore every RNG to where it was when it was saved."""
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    tensors = load_file(str(path / "training_state.safetensors"))
    _set_rng_state(tensors, state["rng"])
    return Loaded(
        path,
        Progress(**state["progress"]),
        load_file(str(path / TENSORS)),
        _optimizer_join(tensors, state["optimizer"]),
        state["scheduler"],
        state.get("scaler"),
        _read_ema(path, state),
    )


def _read_ema(path: Path, state: dict) -> EmaWeights | None:
    if state.get("ema") is None:
        return None
    return EmaWeights(load_file(str(path / EMA_TENSORS)), state["ema"])


def restore_scaler(scaler, state: dict | None) -> None:
    """fp16's loss scale and growth tracker as they were at the checkpoint."""
    if scaler is not None and state:
        scaler.load_state_dict(state)
    elif scaler is not None:
        log.warning("the checkpoint holds no gradient-scaler state: fp16 starts a fresh scale")


def find_resumable(root: Path, run_fp: str, remove: bool = True) -> Path | None:
    """The newest complete checkpoint of this run; other runs' checkpoints are removed (by one
    process of several: `remove` false for the others)."""
    mine = None
    for _, path in complete_checkpoints(root):
        fp = json.loads((path / STATE).read_text(encoding="utf-8")).get("fingerprint")
        if fp == run_fp:
            mine = path
        elif remove:
            log.warning(
                "%s belongs to another run (other params, data or base model): removed", path
            )
            shutil.rmtree(path)
    return mine


def starting_checkpoint(root: Path, run_fp: str, resume: bool, acc) -> Path | None:
    """The checkpoint the run continues from (None: step 0), the same for every process of
    `acc` (accelerate's Accelerator or PartialState). The main process alone removes what the
    run will not resume (all of it with `train.resume=false`, the folder left for DVC), the
    others look after it: they may share the folder, on one machine or on several."""
    from accelerate.utils import gather_object

    path = None
    with acc.main_process_first():
        if resume:
            path = find_resumable(root, run_fp, remove=acc.is_main_process)
        elif acc.is_main_process and root.exists():
            log.info("train.resume=false: starting afresh, removing %s", root)
            shutil.rmtree(root)
            root.mkdir(parents=True)
    why = start_disagreement(gather_object([(run_fp, path.name if path else None)]), root)
    if why:
        raise UserError(why)
    return path


def start_disagreement(starts: list[tuple[str, str | None]], root: Path) -> str | None:
    """Why the processes' starts (run fingerprint, checkpoint or None; the main process's
    first) are not one run's, or None. Apart, they would average the gradients of different
    runs or steps, until one waits forever for the others."""
    run_fp, checkpoint = starts[0]
    if apart := [i for i, (fp, _) in enumerate(starts) if fp != run_fp]:
        return (
            f"processes {apart} prepared another run than the main process (other params, "
            "data/dataset or base model): every machine needs the same ones"
        )
    if apart := [i for i, (_, name) in enumerate(starts) if name != checkpoint]:
        theirs = sorted({starts[i][1] or "step 0" for i in apart})
        return (
            f"processes {apart} would start from {', '.join(theirs)}, the main process from "
            f"{checkpoint or 'step 0'}: every machine needs the main process's {root} "
            "(a shared folder)"
        )
    return None


def is_checkpoint(path: str | Path) -> bool:
    """A training checkpoint folder: the adapter's raw tensors and the state that records it."""
    path = Path(path)
    return path.is_dir() and (path / TENSORS).is_file() and (path / STATE).is_file()


def checkpoint_adapter(
    path: Path, tensors: str = TENSORS
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A checkpoint's adapter tensors (`tensors`: its EMA's with `EMA_TENSORS`) and its record
    (None: written before checkpoints recorded their adapter, a LoRA)."""
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    return load_file(str(path / tensors)), state.get("adapter")


def ema_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder whose EMA file `path` is; None when it is not one."""
    path = Path(path)
    if path.name == EMA_TENSORS and path.is_file() and is_checkpoint(path.parent):
        return path.parent
    return None
