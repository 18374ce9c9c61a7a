"""The two files of a trained adapter, written the same way for every kind: diffusers'
`pytorch_lora_weights.safetensors` (where diffusers can read the kind) and the kohya/A1111
`ksh_drawing_style.safetensors` with its `ss_*` metadata; the kind supplies the tensors and its
`ss_network_*` fields. The EMA of the weights (`train.ema_decay`) is saved the same way, its own
pair in `ema/` named with `_ema` (`ksh_drawing_style_ema.safetensors`), its `ss_ema_*` fields
added."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from kshd.adapters.base import Adapter
from kshd.fileio import atomic_path

log = logging.getLogger(__name__)

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "ksh_drawing_style.safetensors"
EMA_DIR = "ema"  # models/lora/ema/: the EMA's pair, only with train.ema_decay
EMA_SUFFIX = "_ema"


def file_names(suffix: str = "") -> tuple[str, str]:
    """(diffusers file, kohya file) of a pair of adapter files named with `suffix`."""
    return tuple(f"{Path(n).stem}{suffix}.safetensors" for n in (DIFFUSERS_FILE, KOHYA_FILE))


def ema_folder(lora_dir: str | Path) -> Path | None:
    """The trained folder's EMA pair's folder (`ema/`), where the training kept an EMA."""
    folder = Path(lora_dir) / EMA_DIR
    return folder if any((folder / n).is_file() for n in file_names(EMA_SUFFIX)) else None


@dataclass(frozen=True)
class KohyaInfo:
    """What the kohya file's `ss_*` fields record about the training (the adapter adds its own
    kind, rank and alpha)."""

    base_model: str
    resolution: int
    trigger: str
    steps: int
    epochs: int
    batch_size: int
    learning_rate: float
    num_images: int
    seed: int
    train_text_encoder: bool = False
    num_reg_images: int = 0
    sdxl: bool = False  # an SDXL base: kohya's SDXL names and ss_base_model_version
    base_model_hash: str | None = None  # a single-file base's sha256, by which Civitai finds it
    clip_skip: int = 1  # model.clip_skip; kohya's `ss_clip_skip`, recorded when not 1


def kohya_metadata(
    info: KohyaInfo, network: Mapping[str, object], output_name: str = Path(KOHYA_FILE).stem
) -> dict[str, object]:
    """The `ss_*` fields A1111's and civitai's readers show; `network`: the adapter's
    `ss_network_*` fields; `output_name`: the file's name without `.safetensors`.

    kohya records the learning rate per part; a text-encoder rate of 0 says the file changes the
    UNet alone, so readers do not expect `lora_te_` keys. `ss_clip_skip` is written as kohya
    writes `--clip_skip 2`, and left out at 1 (kohya's "None": the last layer), so files trained
    at 1 stay as they were.
    """
    lr = info.learning_rate
    return {
        **network,
        "ss_base_model_version": "sdxl_base_v1-0" if info.sdxl else "sd_v1",
        "ss_sd_model_name": info.base_model,
        **({"ss_new_sd_model_hash": info.base_model_hash} if info.base_model_hash else {}),
        "ss_resolution": f"({info.resolution}, {info.resolution})",
        "ss_tag_frequency": {"ksh": {info.trigger: info.num_images}},
        "ss_output_name": output_name,
        "ss_steps": str(info.steps),
        "ss_epoch": str(info.epochs),
        "ss_batch_size_per_device": str(info.batch_size),
        "ss_learning_rate": str(lr),
        "ss_unet_lr": str(lr),
        "ss_text_encoder_lr": str(lr if info.train_text_encoder else 0.0),
        "ss_num_train_images": str(info.num_images),
        "ss_num_reg_images": str(info.num_reg_images),
        "ss_seed": str(info.seed),
        **({"ss_clip_skip": str(info.clip_skip)} if info.clip_skip != 1 else {}),
        "ss_training_comment": f"trigger phrase: {info.trigger}",
        "modelspec.title": "KSH drawing style",
        "modelspec.architecture": (
            "stable-diffusion-xl-v1-base/lora" if info.sdxl else "stable-diffusion-v1/lora"
        ),
    }


def canonical_safetensors(data: bytes) -> bytes:
    """The same file with its header's keys sorted.

    safetensors writes `__metadata__` in hash-map order, which changes from process to process:
    two identical trainings would give files with different bytes (and DVC hashes). The format
    allows any key order; the header stays padded to 8 bytes.
    """
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    if isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + size :]


def write_diffusers(
    tensors: Mapping[str, torch.Tensor], out_dir: Path, name: str = DIFFUSERS_FILE
) -> Path:
    """`pipe.load_lora_weights(out_dir, weight_name=name)` loads this."""
    from safetensors.torch import save_file

    target = out_dir / name
    with atomic_path(target) as tmp:
        save_file(dict(tensors), str(tmp), metadata={"format": "pt"})
    return target


def write_kohya(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, object],
    out_dir: Path,
    name: str = KOHYA_FILE,
) -> Path:
    """kohya-named tensors with `ss_*` metadata, the same bytes from any process."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    target = out_dir / name
    with atomic_path(target) as tmp:
        tmp.write_bytes(canonical_safetensors(save(dict(tensors), metadata=meta)))
    return target


def save_adapter(
    out_dir: Path, adapter: Adapter, info: KohyaInfo, unet, text_encoder=None, text_encoder_2=None
) -> tuple[Path | None, Path]:
    """Both files of a trained adapter: (diffusers file or None, kohya file).

    The one save sequence of the project (stage, tests, fixtures), so every adapter folder holds
    its files made the same way. A text encoder (SDXL's second too) counts only if it carries
    the adapter."""
    state = adapter.tensors(unet, text_encoder, text_encoder_2)
    return save_adapter_state(out_dir, adapter, info, state, getattr(unet, "config", None))


def save_adapter_state(
    out_dir: Path,
    adapter: Adapter,
    info: KohyaInfo,
    state: Mapping[str, torch.Tensor],
    unet_config: Mapping | None,
    suffix: str = "",
    metadata: Mapping[str, str] | None = None,
) -> tuple[Path | None, Path]:
    """`save_adapter` from the tensors `adapter.tensors` gives (a checkpoint's, an EMA's), the
    files named with `suffix` and the kohya file's `ss_*` fields completed by `metadata`.

    A kind diffusers cannot read gets no diffusers file (a stale one is removed, so the folder
    never pairs two trainings)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    diffusers_name, kohya_name = file_names(suffix)
    diffusers = adapter.diffusers_tensors(state)
    if diffusers is None:
        (out_dir / diffusers_name).unlink(missing_ok=True)
        log.info("diffusers cannot read a %s adapter: only %s is written", adapter.kind, kohya_name)
    diffusers_file = (
        write_diffusers(diffusers, out_dir, diffusers_name) if diffusers is not None else None
    )
    kohya = adapter.kohya_tensors(state, info.sdxl, unet_config)
    fields = kohya_metadata(info, adapter.network_metadata(), Path(kohya_name).stem)
    kohya_file = write_kohya(kohya, fields | dict(metadata or {}), out_dir, kohya_name)
    log.info("%s saved: %s, %s", adapter.kind, diffusers_file, kohya_file)
    return diffusers_file, kohya_file


def remove_adapter_files(out_dir: Path, suffix: str = "") -> None:
    """The pair named with `suffix` removed (an EMA's, when the run kept none)."""
    for name in file_names(suffix):
        (Path(out_dir) / name).unlink(missing_ok=True)
