"""Single-file checkpoints: `model.pretrained` naming one `.safetensors`, as anime bases are
downloaded (Civitai; Illustrious-XL v1.1 and v2.0 exist only so).

diffusers reads them with `from_single_file`: the weights from the file, the components'
configs and tokenizers from a diffusers model of the same family (`model.single_file_config`,
null: diffusers' own choice, fetched once, a few MB). Such a file cannot say what its model
predicts to diffusers (it takes SDXL for epsilon), so the prediction comes from config; the
markers some files carry (`v_pred`, `ztsnr` tensors as ComfyUI reads them, kohya's
`modelspec.prediction_type`) are checked against it, so a v-prediction base is never trained or
drawn as epsilon, which draws noise without an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kshd.models.family import SD1, SDXL, CheckpointInfo, read_checkpoint
from kshd.models.source import (
    CHECKPOINT_SUFFIXES,
    ModelSourceError,
    check_model_source,
    hub_offline,
    in_hub_cache,
)

log = logging.getLogger(__name__)


SAFE_SUFFIX = ".safetensors"


PICKLE_SUFFIXES = tuple(s for s in CHECKPOINT_SUFFIXES if s != SAFE_SUFFIX)


# what diffusers' from_single_file reads a file's configs and tokenizers from when not told
DEFAULT_CONFIGS = {
    SD1: "stable-diffusion-v1-5/stable-diffusion-v1-5",
    SDXL: "stabilityai/stable-diffusion-xl-base-1.0",
}


def config_source(family: str, config: str | None) -> str:
    """Where the configs and tokenizers of a `family` single file come from."""
    return config or DEFAULT_CONFIGS[family]


def check_single_file(
    path: str, config: str | None, prediction_type: str | None, zero_terminal_snr: bool
) -> CheckpointInfo:
    """Before any loading: the file is a safetensors SD 1.x / SDXL checkpoint, its configs can
    be had, and config says what its markers say it predicts. One line naming the key if not."""
    from kshd.models.family import model_family

    file = Path(path).expanduser()
    if file.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelSourceError(
            f"config key `model.pretrained` = {path!r}: safetensors only (a {file.suffix} file is "
            "a pickle that can run code when loaded); download the .safetensors release."
        )
    if not file.is_file():
        raise ModelSourceError(f"config key `model.pretrained` = {path!r}: no such file.")
    info = read_checkpoint(file)
    source = config_source(info.family, config)
    _check_config(source, config is None)
    if (family := model_family(source)) != info.family:
        raise ModelSourceError(
            f"config key `model.single_file_config` = {source!r} is {family}, but "
            f"`model.pretrained` = {path!r} is {info.family}; give a model of the same family."
        )
    _check_prediction(path, info, prediction_type, zero_terminal_snr)
    return info


def _check_config(source: str, default: bool) -> None:
    """The configs can be had: a folder, the Hub cache, or the Hub (probed, one line if not)."""
    if hub_offline() and not _have_locally(source):
        partly = in_hub_cache(source, "model_index.json")
        if default or partly:
            held = (f"has only part of it (no {_missing_configs(source)[0]})" if partly
                    else "does not hold it")  # fmt: skip
            raise ModelSourceError(
                f"config key `model.single_file_config` = {None if default else source!r}: a "
                f"single-file checkpoint's configs and tokenizers come from {source} (a few MB, "
                f"fetched once); the local Hugging Face cache {held}, and HF_HUB_OFFLINE is "
                "set. Ways out: network access once, or set model.single_file_config to a "
                "local diffusers folder of that family."
            )
    check_model_source(source, "model.single_file_config", "model_index.json")


def _check_prediction(path: str, info: CheckpointInfo, prediction: str | None, ztsnr: bool):
    if info.v_pred and prediction != "v_prediction":
        raise ModelSourceError(
            f"config key `model.prediction_type` = {prediction}: `model.pretrained` = {path!r} "
            "is a v-prediction checkpoint (it says so); set model.prediction_type=v_prediction"
            + (" and model.zero_terminal_snr=true" if info.ztsnr else "")
            + " (model=noobai_xl_vpred does), or it draws noise."
        )
    if info.ztsnr and not ztsnr:
        raise ModelSourceError(
            f"config key `model.zero_terminal_snr` = false: `model.pretrained` = {path!r} was "
            "trained with zero terminal SNR (its `ztsnr` marker); set model.zero_terminal_snr=true."
        )
    if prediction is None and info.family == SDXL:
        log.warning("%s: a single file cannot say what it predicts; taken as epsilon "
                    "(set model.prediction_type for a v-prediction base)", path)  # fmt: skip


def load_pipeline(path: str, config: str | None, family: str, dtype, **components):
    """The SD 1.x or SDXL pipeline of a single file (safetensors), no safety checker; a
    component given as None is not loaded (the trainer's UNet, loaded later)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    source = config_source(family, config)
    kw = dict(config=source, dtype=dtype, local_files_only=_have_locally(source))
    if family == SDXL:
        return StableDiffusionXLPipeline.from_single_file(path, **kw, **components)
    return StableDiffusionPipeline.from_single_file(
        path, safety_checker=None, requires_safety_checker=False, **kw, **components
    )


def load_unet(path: str, config: str | None, family: str):
    """The UNet alone of a single file (the trainer loads it once the caches are filled)."""
    import torch
    from diffusers import UNet2DConditionModel

    source = config_source(family, config)
    return UNet2DConditionModel.from_single_file(
        path, config=source, subfolder="unet", dtype=torch.float32,
        local_files_only=_have_locally(source),
    )  # fmt: skip


def _have_locally(source: str) -> bool:
    """Every config the loader reads is in a folder here or in the Hub cache, so diffusers need
    not ask the Hub (a cache holding only model_index.json, as the family check leaves it, is
    not: diffusers would then load from that partial snapshot and miss the scheduler's)."""
    return Path(source).expanduser().is_dir() or not _missing_configs(source)


# the files a diffusers pipeline's component is read from, by kind (named in its class's name)
COMPONENT_FILES = {
    "Scheduler": ("scheduler_config.json",),
    "Tokenizer": ("tokenizer_config.json", "vocab.json", "merges.txt"),
    "ImageProcessor": ("preprocessor_config.json",),
    "FeatureExtractor": ("preprocessor_config.json",),
}


def _missing_configs(source: str) -> list[str]:
    """The config files of the Hub model `source` that its cached snapshot lacks: its
    model_index.json and, for each component that names, the config (and vocabulary) files."""
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(source, "model_index.json")
    except ValueError:  # no repo id (a folder that is not there)
        index = None
    if not isinstance(index, str):
        return ["model_index.json"]
    files = []
    for name, spec in json.loads(Path(index).read_text(encoding="utf-8")).items():
        if name.startswith("_") or not isinstance(spec, list) or None in spec:
            continue
        kind = next((k for k in COMPONENT_FILES if k in str(spec[-1])), None)
        files += [f"{name}/{f}" for f in COMPONENT_FILES.get(kind, ("config.json",))]
    return [f for f in files if not in_hub_cache(source, f)]
