"""Which keys of a kohya/LyCORIS file ComfyUI and A1111 would load, by their rules, for a
diffusers model folder laid out as the single-file checkpoint those apps load
(`kshd.models.ldm_names`, which from_single_file reads back in the single-file tests).

ComfyUI (comfy/lora.py, comfy/weight_adapter/): a UNet module answers to `lora_unet_` plus its
LDM name or its diffusers name, dots as underscores; a CLIP layer's attention and MLP
projections to `lora_te_text_model_encoder_layers_<i>_<layer>` (SDXL: `lora_te1_`/`lora_te2_`).
A1111 (extensions-builtin/Lora/networks.py): an SD 1.x file's diffusers names are converted to
LDM names by SD's fixed block layout (three input slots per down block), an SDXL file's are
already LDM (`lora_unet_` -> `diffusion_model_`); the second SDXL encoder's q/k/v land on its
fused `attn`. Each app reads, per module, the tensors of its module types below.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from safetensors.torch import load_file

from kshd.models.ldm_names import UNET_PREFIX, clip_to_ldm, openclip_to_ldm, unet_to_ldm

READ = {  # the tensors the apps' module types take from a module (LoRA with DoRA, LoHa, LoKr)
    "lora": {"lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha",
             "dora_scale"},
    "lokr": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
             "alpha", "dora_scale"},
}  # fmt: skip
CLIP_LAYERS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj",
               "self_attn_out_proj")  # fmt: skip
RESNET = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1",
          "conv_shortcut": "skip_connection"}  # fmt: skip


def _part(folder: Path, part: str) -> tuple[dict, dict]:
    config = json.loads((folder / part / "config.json").read_text(encoding="utf-8"))
    weights = next((folder / part).glob("*.safetensors"))
    return load_file(str(weights)), config


def _flat(name: str) -> str:
    return name.replace(".", "_")


@cache  # per model folder: it reads the model's weights
def comfy_modules(folder: Path, sdxl: bool) -> frozenset[str]:
    """The module names ComfyUI's key map holds for this model."""
    state, config = _part(folder, "unet")
    names = {f"lora_unet_{_flat(k[: -len('.weight')])}" for k in state if k.endswith(".weight")}
    ldm = unet_to_ldm(state, config)
    names |= {f"lora_unet_{_flat(k[len(UNET_PREFIX) : -len('.weight')])}" for k in ldm
              if k.endswith(".weight")}  # fmt: skip
    encoders = ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",)
    prefixes = ("lora_te1_", "lora_te2_") if sdxl else ("lora_te_",)
    for part, prefix in zip(encoders, prefixes, strict=True):
        layers = _part(folder, part)[1]["num_hidden_layers"]
        names |= {f"{prefix}text_model_encoder_layers_{i}_{c}" for i in range(layers)
                  for c in CLIP_LAYERS}  # fmt: skip
    return frozenset(names)


@cache  # per model folder: it reads the model's weights
def a1111_modules(folder: Path, sdxl: bool) -> frozenset[str]:
    """A1111's `network_layer_mapping` names: every module of the LDM model, flattened."""
    state, config = _part(folder, "unet")
    keys = [k.replace(UNET_PREFIX, "diffusion_model.", 1) for k in unet_to_ldm(state, config)]
    clip = clip_to_ldm(_part(folder, "text_encoder")[0], "transformer.")
    if sdxl:
        keys += [f"0_{k}" for k in clip]
        keys += [f"1_{k}" for k in openclip_to_ldm(_part(folder, "text_encoder_2")[0], "model.")]
    else:
        keys += list(clip)
    return frozenset(_flat(k.rpartition(".")[0]) for k in keys)


def _a1111_sd1_name(key: str) -> str:
    """An SD 1.x file's diffusers-named module as A1111 converts it (SD's block layout)."""
    rules = [
        (r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
         lambda b, kind, j, rest: f"input_blocks_{1 + 3 * int(b) + int(j)}_{_slot(kind, rest)}"),
        (r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)",
         lambda kind, j, rest: f"middle_block_{1 if kind == 'attentions' else 2 * int(j)}_"
                               f"{_slot(kind, rest).split('_', 1)[1]}"),
        (r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
         lambda b, kind, j, rest: f"output_blocks_{3 * int(b) + int(j)}_{_slot(kind, rest)}"),
    ]  # fmt: skip
    for pattern, build in rules:
        if m := re.fullmatch(pattern, key):
            return f"diffusion_model_{build(*m.groups())}"
    if m := re.fullmatch(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", key):
        return f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"
    if m := re.fullmatch(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", key):
        rest = m[2].replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj")
        return f"1_model_transformer_resblocks_{m[1]}_{rest.replace('self_attn', 'attn')}"
    return key


def _slot(kind: str, rest: str) -> str:
    return f"1_{rest}" if kind == "attentions" else f"0_{RESNET.get(rest, rest)}"


def a1111_module(key: str, mapping: frozenset[str]) -> str | None:
    """The model module A1111 puts a file's module on, None where it finds none."""
    name = _a1111_sd1_name(key)
    if name in mapping:
        return name
    if (m := re.fullmatch(r"(.*)_([qkv]_proj)", name)) and m[1] in mapping:
        return m[1]
    for old, new in (("lora_unet", "diffusion_model"), ("lora_te1_text_model",
                     "0_transformer_text_model")):  # fmt: skip
        if key.startswith(old) and key.replace(old, new, 1) in mapping:
            return key.replace(old, new, 1)
    return None


def unread(keys, folder: Path, sdxl: bool, app: str) -> list[str]:
    """The file's keys the app would leave unloaded ([] where it loads them all)."""
    mapping = comfy_modules(folder, sdxl) if app == "comfyui" else a1111_modules(folder, sdxl)
    modules: dict[str, set[str]] = {}
    for key in keys:
        module, _, suffix = key.partition(".")
        modules.setdefault(module, set()).add(suffix)
    out = []
    for module, suffixes in modules.items():
        found = module in mapping if app == "comfyui" else a1111_module(module, mapping)
        kind = next((k for k, read in READ.items() if suffixes <= read), None)
        if not found or kind is None:
            out += [f"{module}.{s}" for s in sorted(suffixes)]
    return out
