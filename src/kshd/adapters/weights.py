"""Trained adapter weights as drawing finds them (a folder of the two files, one file, or a
training checkpoint): which kind reads them, and the name and file A1111's PNG info gives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from kshd.adapters.base import Adapter, Weights
from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE
from kshd.adapters.registry import DEFAULT_KIND, adapter_class, claiming
from kshd.training.checkpoints import TENSORS, checkpoint_adapter, is_checkpoint

log = logging.getLogger(__name__)
PIPE_NAME = "ksh"  # the adapter's name in a pipeline (peft's adapter_name)


@dataclass(frozen=True)
class AdapterWeights:
    """What to load (`source`: a file, or a checkpoint's tensors as the kind's `attach` takes
    them), by which kind, named `name` in `<lora:name:w>` and hashed from `hashed`."""

    adapter: type[Adapter]
    source: Weights
    name: str
    hashed: Path

    def attach(self, pipe, name: str = PIPE_NAME) -> None:
        self.adapter.attach(pipe, self.source, name)

    def attach_unet(self, pipe, unet, name: str = PIPE_NAME) -> None:
        self.adapter.attach_unet(pipe, unet, self.source, name)


def adapter_file(path: str | Path) -> tuple[Path, str, Path]:
    """(file to load, name for A1111, file to hash) of an adapter folder or file: a folder's
    diffusers file where it has one, its kohya file otherwise."""
    path = Path(path)
    if path.is_dir():
        if not (path / DIFFUSERS_FILE).is_file() and not (path / KOHYA_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {DIFFUSERS_FILE} or {KOHYA_FILE} in the folder")
        load = path / DIFFUSERS_FILE if (path / DIFFUSERS_FILE).is_file() else path / KOHYA_FILE
        named = path / KOHYA_FILE if (path / KOHYA_FILE).is_file() else load
        return load, named.stem, named
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(f"{path}: a LoRA must be an existing .safetensors file or folder")
    return path, path.stem, path


def open_weights(path: str | Path, fallback_strength: float | None = None) -> AdapterWeights:
    """The weights of an adapter folder or file (its kind from its tensors' names and
    metadata), or of a training checkpoint (its kind and strength from its record).

    `fallback_strength`: the run's alpha / rank for a checkpoint written before checkpoints
    recorded their adapter (raw LoRA tensors); such a checkpoint without it is refused."""
    if is_checkpoint(path):
        return _checkpoint_weights(Path(path), fallback_strength)
    load, name, hashed = adapter_file(path)
    with safe_open(str(load), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata() or {}  # noqa: SIM118 (not a dict)
    return AdapterWeights(claiming(keys, metadata), load, name, hashed)


def _checkpoint_weights(folder: Path, fallback_strength: float | None) -> AdapterWeights:
    tensors, record = checkpoint_adapter(folder)
    if record is None:
        if fallback_strength is None:
            raise ValueError(f"{folder}: a training checkpoint needs the run's alpha / rank")
        log.info("%s records no adapter: read as a LoRA at %g", folder, fallback_strength)
        record = {"kind": DEFAULT_KIND, "rank": 1, "alpha": fallback_strength}
    cls = adapter_class(record["kind"])
    return AdapterWeights(cls, cls.checkpoint_weights(tensors, record), folder.name,
                          folder / TENSORS)  # fmt: skip
