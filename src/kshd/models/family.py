"""Which family a base model is (SD 1.x or SDXL), read from the model itself: a folder's
model_index.json or a single file's header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kshd.models.source import CHECKPOINT_SUFFIXES, ModelSourceError

SD1, SDXL = "sd1", "sdxl"


V_PRED_NAMES = {"v", "v_prediction", "v-prediction"}  # kohya's modelspec.prediction_type


def is_single_file(name: str | Path) -> bool:
    """Whether `model.pretrained` names a checkpoint file rather than a folder or a Hub id."""
    return Path(str(name)).suffix.lower() in CHECKPOINT_SUFFIXES


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's header says: its family and the prediction markers it carries."""

    family: str
    v_pred: bool
    ztsnr: bool


def read_checkpoint(path: str | Path, key: str = "model.pretrained") -> CheckpointInfo:
    """The family (SDXL: a second, OpenCLIP text encoder) and markers of a single file, from
    its header alone; one line naming `key` for a file that is no SD 1.x or SDXL checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names, meta = set(f.keys()), f.metadata() or {}
    except Exception as err:  # noqa: BLE001 (safetensors raises its own and OS errors)
        raise ModelSourceError(
            f"config key `{key}` = {str(path)!r} cannot be read as safetensors ({err}); "
            "give an SD 1.x or SDXL checkpoint .safetensors file."
        ) from None
    has = lambda prefix: any(n.startswith(prefix) for n in names)  # noqa: E731
    if not has("model.diffusion_model."):
        what = "a LoRA" if any(n.startswith("lora_") for n in names) else "no base model"
        raise ModelSourceError(f"config key `{key}` = {str(path)!r} is {what} (no UNet "
                               "`model.diffusion_model.*`); give a whole checkpoint.")  # fmt: skip
    if has("conditioner.embedders.1."):
        family = SDXL
    elif has("cond_stage_model.transformer."):
        family = SD1
    else:
        raise ModelSourceError(
            f"config key `{key}` = {str(path)!r} is neither SD 1.x (CLIP ViT-L text encoder) "
            "nor SDXL (two text encoders): SD 2.x, SD3 and others are not supported."
        )
    prediction = str(meta.get("modelspec.prediction_type", "")).lower()
    return CheckpointInfo(family, "v_pred" in names or prediction in V_PRED_NAMES, "ztsnr" in names)


FAMILY_NAMES = {SD1: "SD 1.x", SDXL: "SDXL"}


def model_family(source: str | Path, revision: str | None = None) -> str:
    """`sdxl` or `sd1`, read from the model itself, never typed twice: a second text encoder in
    its `model_index.json` (a local folder, or the hub's copy in the local cache / fetched) or
    in a single file's weights."""
    path = Path(source).expanduser()
    if is_single_file(path):
        return read_checkpoint(path).family
    index = path / "model_index.json"
    if not index.is_file():
        from huggingface_hub import hf_hub_download

        index = Path(hf_hub_download(str(source), "model_index.json", revision=revision))
    components = json.loads(index.read_text(encoding="utf-8"))
    return SDXL if components.get("text_encoder_2") else SD1
