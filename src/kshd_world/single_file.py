"""A diffusers SD 1.x or SDXL folder written as one `.safetensors` checkpoint in the original
layout, the form anime bases are downloaded in (Civitai, Illustrious-XL v1.1 / v2.0): the test
world's stand-in for such a file, read back by diffusers' `from_single_file` as a user's is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kshd.models.ldm_names import (
    SD1_TEXT_PREFIX,
    SDXL_TEXT_PREFIX,
    clip_to_ldm,
    openclip_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of one component folder of a diffusers pipeline."""
    from safetensors.torch import load_file

    sub = folder / name
    weights = next((sub / f for f in WEIGHT_FILES if (sub / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{sub}: no {' or '.join(WEIGHT_FILES)} (not fp32 safetensors?)")
    return load_file(weights), json.loads((sub / "config.json").read_text(encoding="utf-8"))


def write_single_file(
    folder: Path, out: Path, markers: tuple[str, ...] = (), metadata: dict | None = None
) -> Path:
    """`out`: the folder's UNet, VAE and text encoder(s) under LDM / SGM names. `markers` adds
    the empty tensors some anime checkpoints carry to say what they predict (`v_pred`, `ztsnr`:
    NoobAI-XL v-pred; ComfyUI reads them)."""
    from safetensors.torch import save_file

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    unet, unet_config = _component(folder, "unet")
    vae, vae_config = _component(folder, "vae")
    state = unet_to_ldm(unet, unet_config) | vae_to_ldm(vae, vae_config)
    text, _ = _component(folder, "text_encoder")
    if index.get("text_encoder_2"):
        text_2, _ = _component(folder, "text_encoder_2")
        state |= clip_to_ldm(text, SDXL_TEXT_PREFIX) | openclip_to_ldm(text_2)
    else:
        state |= clip_to_ldm(text, SD1_TEXT_PREFIX)
    state |= {marker: torch.tensor([]) for marker in markers}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=metadata)
    return out
