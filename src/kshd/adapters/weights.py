"""Trained adapter weights as drawing finds them (a folder of the two files, one file, or a
training checkpoint or its EMA's file): which kind reads them, and the name and file A1111's PNG
info gives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from kshd.adapters.base import Adapter, Weights
from kshd.adapters.files import EMA_SUFFIX, file_names
from kshd.adapters.fit import LoraBase, check_fits, file_base, tensors_base
from kshd.adapters.registry import DEFAULT_KIND, adapter_class, claiming
from kshd.training.checkpoints import (
    EMA_TENSORS,
    TENSORS,
    checkpoint_adapter,
    ema_checkpoint,
    is_checkpoint,
)

log = logging.getLogger(__name__)
PIPE_NAME = "ksh"  # the adapter's name in a pipeline (peft's adapter_name)


@dataclass(frozen=True)
class AdapterWeights:
    """What to load (`source`: a file, or a checkpoint's tensors as the kind's `attach` takes
    them), by which kind, named `name` in `<lora:name:w>` and hashed from `hashed`; `base`:
    what it says of the base model it was made for."""

    adapter: type[Adapter]
    source: Weights
    name: str
    hashed: Path
    base: LoraBase

    def check_fits(self, pipe, key: str, path: str | Path, base_model: str) -> None:
        """LoraRefused naming `key`, `path`, its base and `base_model` where it does not fit
        `pipe` (another family, another text embedding width): before any layer is touched."""
        check_fits(self.base, pipe, key, path, base_model)

    def attach(self, pipe, name: str = PIPE_NAME) -> None:
        self.adapter.attach(pipe, self.source, name)

    def attach_unet(self, pipe, unet, name: str = PIPE_NAME) -> None:
        self.adapter.attach_unet(pipe, unet, self.source, name)


def adapter_file(path: str | Path) -> tuple[Path, str, Path]:
    """(file to load, name for A1111, file to hash) of an adapter folder or file: a folder's
    diffusers file where it has one, its kohya file otherwise (an EMA folder's `_ema` pair
    where it holds no other)."""
    path = Path(path)
    if path.is_dir():
        pairs = [[path / n for n in file_names(s)] for s in ("", EMA_SUFFIX)]
        found = [pair for pair in pairs if any(f.is_file() for f in pair)]
        if not found:
            diffusers, kohya = file_names()
            raise FileNotFoundError(f"{path}: no {diffusers} or {kohya} in the folder")
        diffusers, kohya = found[0]
        load = diffusers if diffusers.is_file() else kohya
        named = kohya if kohya.is_file() else load
        return load, named.stem, named
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(f"{path}: a LoRA must be an existing .safetensors file or folder")
    return path, path.stem, path


def adapter_identity(path: str | Path) -> tuple[str, Path]:
    """(A1111 name, file hashed) of an adapter folder or file, a training checkpoint or its
    EMA's file, without reading it: what `<lora:name:w>` and `Lora hashes` call it."""
    if is_checkpoint(path):
        return Path(path).name, Path(path) / TENSORS
    if folder := ema_checkpoint(path):
        return folder.name + EMA_SUFFIX, folder / EMA_TENSORS
    _, name, hashed = adapter_file(path)
    return name, hashed


def open_weights(path: str | Path, fallback_strength: float | None = None) -> AdapterWeights:
    """The weights of an adapter folder or file (its kind from its tensors' names and
    metadata), or of a training checkpoint (its kind and strength from its record).

    `fallback_strength`: the run's alpha / rank for a checkpoint written before checkpoints
    recorded their adapter (raw LoRA tensors); such a checkpoint without it is refused."""
    if is_checkpoint(path):
        return _checkpoint_weights(Path(path), fallback_strength)
    if folder := ema_checkpoint(path):
        return _checkpoint_weights(folder, fallback_strength, EMA_TENSORS)
    load, name, hashed = adapter_file(path)
    with safe_open(str(load), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata() or {}  # noqa: SIM118 (not a dict)
    return AdapterWeights(claiming(keys, metadata), load, name, hashed, file_base(hashed))


def _checkpoint_weights(
    folder: Path, fallback_strength: float | None, file: str = TENSORS
) -> AdapterWeights:
    """`file`: the adapter's tensors, or its EMA's (`EMA_TENSORS`, named `<checkpoint>_ema`)."""
    tensors, record = checkpoint_adapter(folder, file)
    if record is None:
        if fallback_strength is None:
            raise ValueError(f"{folder}: a training checkpoint needs the run's alpha / rank")
        log.info("%s records no adapter: read as a LoRA at %g", folder, fallback_strength)
        record = {"kind": DEFAULT_KIND, "rank": 1, "alpha": fallback_strength}
    cls = adapter_class(record["kind"])
    name = folder.name + (EMA_SUFFIX if file == EMA_TENSORS else "")
    source = cls.checkpoint_weights(tensors, record)
    return AdapterWeights(cls, source, name, folder / file, tensors_base(source))
