"""Diffusers' module names in the original (LDM / SGM) layout that single-file checkpoints,
kohya's SDXL LoRA keys, A1111 and ComfyUI use.

A checkpoint downloaded from Civitai names the UNet `model.diffusion_model.input_blocks.4.1...`
where diffusers says `down_blocks.1.attentions.0...`. diffusers reads that layout
(`from_single_file`); this module writes it: for the tiny test models' single files, and for the
UNet keys of an SDXL LoRA as kohya's `sdxl_train_network.py` names them. The rules are those of
diffusers' `convert_ldm_unet_checkpoint` / `convert_ldm_vae_checkpoint` run backwards, for any
number of blocks (the tiny models have two, SD has four, SDXL three).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."  # + HF CLIPTextModel's own names
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."  # CLIP ViT-L, HF names
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG, OpenCLIP names

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _per_block(value: int | Sequence[int], blocks: int) -> list[int]:
    return list(value) if isinstance(value, Sequence) else [value] * blocks


def unet_prefixes(config: Mapping) -> dict[str, str]:
    """{diffusers module path: LDM module path} of each block of a UNet2DConditionModel."""
    down, up = config["down_block_types"], config["up_block_types"]
    layers = _per_block(config["layers_per_block"], len(down))
    out = dict(_UNET_TOP)
    index = 1
    for b, kind in enumerate(down):
        for j in range(layers[b]):
            out[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{index}.0"
            if "CrossAttn" in kind:
                out[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if b < len(down) - 1:
            out[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    out |= {
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    index = 0
    up_layers = list(reversed(layers))
    for b, kind in enumerate(up):
        attention = "CrossAttn" in kind
        for j in range(up_layers[b] + 1):
            out[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{index}.0"
            if attention:
                out[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if b < len(up) - 1:  # the block's last layer also upsamples
            out[f"up_blocks.{b}.upsamplers.0.conv"] = (
                f"output_blocks.{index - 1}.{2 if attention else 1}.conv"
            )
    return out


def _longest_prefix(name: str, prefixes: Mapping[str, str]) -> tuple[str, str]:
    """(the longest module path of `name` in `prefixes`, the rest of `name`)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        if (head := ".".join(parts[:cut])) in prefixes:
            return head, ".".join(parts[cut:])
    raise KeyError(f"no LDM name for UNet module {name!r}")


def ldm_unet_name(name: str, prefixes: Mapping[str, str]) -> str:
    """A UNet parameter or module name in the LDM layout (`unet_prefixes(config)`); resnets'
    layers renamed, attention blocks' inner names kept (they are the same in both)."""
    module, rest = _longest_prefix(name, prefixes)
    if ".resnets." in f".{module}." and rest:
        first, _, tail = rest.partition(".")
        rest = ".".join(filter(None, (_RESNET.get(first, first), tail)))
    return ".".join(filter(None, (prefixes[module], rest)))


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers UNet's state dict under `model.diffusion_model.` in the LDM layout."""
    prefixes = unet_prefixes(config)
    return {UNET_PREFIX + ldm_unet_name(k, prefixes): v for k, v in state.items()}


def _vae_name(name: str, blocks: int) -> str:
    """A diffusers AutoencoderKL parameter name in the LDM layout (the decoder's blocks numbered
    from the bottom, as LDM does)."""
    rules = [
        (r"(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
        (r"(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
        (r"(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
    ]
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    up = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers\.0)\.(.*)", name)
    if up:
        where = "block" if up[2] == "resnets" else "upsample"
        name = f"decoder.up.{blocks - 1 - int(up[1])}.{where}.{up[3]}"
    name = name.replace(".conv_shortcut.", ".nin_shortcut.")
    if ".attn_1." in name:
        head, _, rest = name.partition(".attn_1.")
        layer, _, kind = rest.rpartition(".")
        name = f"{head}.attn_1.{_VAE_ATTENTION.get(layer, layer)}.{kind}"
    return name


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers VAE's state dict under `first_stage_model.`; the middle attention's linear
    weights as LDM's 1×1 convolutions."""
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        name = _vae_name(key, blocks)
        if ".attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + name] = value
    return out


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel's state dict as SD 1.x (`cond_stage_model.transformer.`) or SDXL's
    first encoder (`conditioner.embedders.0.transformer.`) hold it: `text_model.` names."""
    return {
        prefix + (k if k.startswith("text_model.") else f"text_model.{k}"): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def openclip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str = SDXL_TEXT2_PREFIX) -> dict:
    """An HF CLIPTextModelWithProjection's state dict in OpenCLIP's names, as SDXL's second
    encoder is stored: q, k, v fused into `in_proj`, the projection transposed."""
    s = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {
        "token_embedding.weight": s.pop("embeddings.token_embedding.weight"),
        "positional_embedding": s.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": s.pop("final_layer_norm.weight"),
        "ln_final.bias": s.pop("final_layer_norm.bias"),
        "text_projection": s.pop("text_projection.weight").T.contiguous(),
    }
    s.pop("embeddings.position_ids", None)
    layers = sorted({int(k.split(".")[2]) for k in s if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [s.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            )
            for hf, oc in _OPENCLIP_LAYER.items():
                out[f"{dst}{oc}.{kind}"] = s.pop(f"{src}{hf}.{kind}")
    if s:
        raise KeyError(f"OpenCLIP has no place for {sorted(s)[:3]}")
    return {prefix + k: v for k, v in out.items()}
