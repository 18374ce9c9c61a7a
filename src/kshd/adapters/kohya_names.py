"""kohya's module names, shared by every kind's kohya file: the text encoders' `lora_te_...`
(SDXL's `lora_te1_` / `lora_te2_`) and an SDXL UNet's original (SGM) block names; and back, a
file's module names to a pipeline's modules."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress

import torch

from kshd.models.ldm_names import ldm_unet_name, unet_prefixes


def sgm_unet_keys(state: Mapping, unet_config: Mapping, marker: str) -> dict:
    """`unet.<diffusers module><marker>...` keys renamed to the module's SGM (LDM) name;
    `marker` starts the adapter's own part of a key (LoRA's `.lora_`)."""
    prefixes = unet_prefixes(unet_config)
    out = {}
    for key, value in state.items():
        if key.startswith("unet."):
            module, _, rest = key.removeprefix("unet.").partition(marker)
            key = f"unet.{ldm_unet_name(module, prefixes)}{marker}{rest}"
        out[key] = value
    return out


def kohya_text_encoder_name(key: str, sdxl: bool) -> str:
    """A text-encoder key of diffusers' kohya conversion (`lora_te1_...`) under the name kohya
    writes: SD 1.x's `lora_te_text_model_...`, SDXL's `lora_te1_text_model_...`/`lora_te2_...`."""
    return _sdxl_text_encoder_name(key) if sdxl else _sd1_text_encoder_name(key)


def _sd1_text_encoder_name(key: str) -> str:
    """SD 1.x kohya files name CLIP keys `lora_te_text_model_...`; diffusers writes SDXL's
    `lora_te1_`, and transformers 5 dropped the `text_model` level from CLIPTextModel."""
    if not key.startswith("lora_te1_"):
        return key
    rest = key[len("lora_te1_") :]
    return "lora_te_" + (rest if rest.startswith("text_model_") else f"text_model_{rest}")


def _sdxl_text_encoder_name(key: str) -> str:
    """SDXL kohya files name the encoders' keys `lora_te1_text_model_...`/`lora_te2_...`."""
    for prefix in ("lora_te1_", "lora_te2_"):
        if key.startswith(prefix) and not key.startswith(f"{prefix}text_model_"):
            return f"{prefix}text_model_{key[len(prefix) :]}"
    return key


def kohya_module_name(part: str, module: str, sdxl: bool, prefixes: Mapping | None) -> str:
    """The kohya name of one adapted module of a pipeline's `part` (`unet`, `text_encoder`,
    `text_encoder_2`): `lora_unet_<module>` (an SDXL UNet's under its SGM name where `prefixes`,
    `unet_prefixes(config)`, are given), `lora_te_...` / `lora_te1_...` / `lora_te2_...`."""
    if part == "unet":
        return "lora_unet_" + (ldm_unet_name(module, prefixes) if prefixes else module).replace(
            ".", "_"
        )
    short = "lora_te1_" if part == "text_encoder" else "lora_te2_"
    return kohya_text_encoder_name(short + module.replace(".", "_"), sdxl)


def kohya_module_names(model, part: str, sdxl: bool) -> dict[str, str]:
    """{kohya name: module path} of every weighted layer of `model` (a pipeline's `part`): the
    reverse of `kohya_module_name`, read off the model itself, so that underscores inside
    diffusers' names (`to_out_0`, `proj_in`) never need guessing. A UNet's layers answer to both
    of their names, diffusers' (kohya's SD 1.x files) and SGM's (SDXL files); ComfyUI reads both
    too."""
    config = getattr(model, "config", None) if part == "unet" else None
    unet = config is not None and "down_block_types" in config
    prefixes = unet_prefixes(config) if unet else None
    out: dict[str, str] = {}
    for path, module in model.named_modules():
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        out[kohya_module_name(part, path, sdxl, None)] = path
        if prefixes is not None:
            with suppress(KeyError):  # a layer outside the blocks' LDM names
                out[kohya_module_name(part, path, sdxl, prefixes)] = path
    return out
