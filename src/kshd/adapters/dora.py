"""DoRA (peft's LoRA with `use_dora`, LyCORIS' `lora` with `dora_wd`): LoRA whose merged weight
is renormalized per output channel to a trained magnitude. Its kohya/LyCORIS file is LoRA's
(`lora_down`, `lora_up`, `.alpha`) plus `.dora_scale` per module. diffusers' loader drops
dora_scale from a kohya file (it would draw a plain LoRA), so that file is drawn through this
kind; diffusers does read DoRA in its own (peft) format, `lora_magnitude_vector`, which the
diffusers file holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from kshd.adapters.base import PARTS, Weights
from kshd.adapters.lora import LoraAdapter
from kshd.adapters.peft_kohya import PeftKohyaAdapter

log = logging.getLogger(__name__)


class DoraAdapter(PeftKohyaAdapter):
    """`dora_scale` as LyCORIS writes it with `wd_on_output` (its default since 3.0, the DoRA
    paper's and peft's axis): one magnitude per output channel, shaped (out, 1) for a linear
    layer and (out, 1, 1, 1) for a conv, the axis ComfyUI and Forge tell from that shape.
    A1111's built-in Lora extension knows only the older input axis, (1, in)."""

    kind = "dora"
    algo = "lora"
    params = {
        "lora_A.weight": "lora_down.weight",
        "lora_B.weight": "lora_up.weight",
        "lora_magnitude_vector": "dora_scale",
    }

    def peft_config(self, targets, ranks, alphas):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                          target_modules=targets, rank_pattern=ranks, alpha_pattern=alphas,
                          use_dora=True)  # fmt: skip

    @classmethod
    def loading_config(cls, targets, ranks, alphas, modules):
        from peft import LoraConfig

        return LoraConfig(r=1, lora_alpha=1, target_modules=targets, rank_pattern=ranks,
                          alpha_pattern=alphas, use_dora=True)  # fmt: skip

    def network_args(self) -> dict[str, str]:
        return super().network_args() | {"dora_wd": "True", "wd_on_output": "True"}

    def module_to_kohya(self, params, rank: int, alpha: float) -> dict:
        down = params["lora_A.weight"]
        scale = params["lora_magnitude_vector"]  # peft: (out,) linear, (1, out, 1, 1) conv
        shaped = scale.reshape(scale.numel(), *[1] * (down.dim() - 1))
        return super().module_to_kohya(params | {"lora_magnitude_vector": shaped}, rank, alpha)

    def diffusers_tensors(self, state: Mapping[str, torch.Tensor]) -> dict:
        """peft's tensors, each module's alpha / rank folded into `lora_B` (diffusers applies
        alpha = rank to a file without alphas); the magnitude as trained."""
        out = {}
        for (part, module), params in self.modules(state).items():
            alpha, rank = params.pop("alpha", self.alpha), params.pop("rank", self.rank)
            for param, tensor in params.items():
                scale = float(alpha) / float(rank) if param == "lora_B.weight" else 1.0
                out[f"{part}.{module}.{param}"] = tensor * scale
        return out

    @classmethod
    def file_rank(cls, tensors: Mapping[str, torch.Tensor]) -> int:
        return int(tensors["lora_down.weight"].shape[0])

    @classmethod
    def claims(cls, keys, metadata) -> bool:
        return any(k.endswith((".dora_scale", ".lora_magnitude_vector")) for k in keys)

    @classmethod
    def attach(cls, pipe, weights: Weights, name: str) -> None:
        """The diffusers file through diffusers' loader, the kohya file (or a checkpoint's
        tensors in its format) through the seam's peft layers."""
        if _diffusers_format(weights):
            LoraAdapter.attach(pipe, weights, name)
        else:
            super().attach(pipe, weights, name)

    @classmethod
    def attach_unet(cls, pipe, unet, weights: Weights, name: str) -> None:
        if _diffusers_format(weights):
            LoraAdapter.attach_unet(pipe, unet, weights, name)
        else:
            super().attach_unet(pipe, unet, weights, name)


def _diffusers_format(weights: Weights) -> bool:
    """Whether `weights` name their tensors as diffusers' file does (`unet.`...)."""
    if isinstance(weights, Path):
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            keys = list(f.keys())  # noqa: SIM118 (not a dict)
    else:
        keys = list(weights)
    return any(k.startswith(tuple(f"{p}." for p in PARTS)) for k in keys)
