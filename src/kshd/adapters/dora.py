"""DoRA (peft's LoRA with `use_dora`, LyCORIS' `lora` with `dora_wd`): LoRA whose merged weight
is renormalized per output channel to a trained magnitude. Its kohya/LyCORIS file is LoRA's
(`lora_down`, `lora_up`, `.alpha`) plus `.dora_scale` per module, drawn here through the seam.

No diffusers file: diffusers' loader drops dora_scale from a kohya file (it would draw a plain
LoRA), and from its own peft-format file (`lora_magnitude_vector`) it loads the UNet's
magnitudes but not the text encoders' (diffusers 0.42 with transformers 5 names them otherwise
and re-initializes them from the base weights), so such a file would draw another model."""

from __future__ import annotations

from functools import cache

import torch

from kshd.adapters.peft_kohya import PeftKohyaAdapter


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
    rank_tensors = ("lora_down.weight",)
    marks = (".dora_scale",)

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

    @classmethod
    def drawing_layer(cls, layer) -> None:
        layer.__class__ = _at_a_strength(type(layer))


class DoraStrength:
    """A drawing's DoRA layer at a strength s as A1111, ComfyUI and LyCORIS apply one: the base
    weight moved toward the full DoRA weight, W + s (W_dora - W), so that 0 is the base. peft's
    own strength scales only the low-rank product inside the norm: at 0 it would still rescale
    every output channel to its trained magnitude. Mixed into peft's layer class at `attach`."""

    strength = 1.0

    def set_scale(self, adapter: str, scale: float) -> None:
        self.strength = float(scale)

    def scale_layer(self, scale: float) -> None:  # diffusers' `scale` (the evaluation)
        self.strength *= scale

    def unscale_layer(self, scale: float | None = None) -> None:
        self.strength = 1.0 if scale is None else self.strength / scale

    def forward(self, x, *args, **kwargs):
        if self.strength == 0.0 and not self.merged:  # the base alone: no DoRA term to compute
            return self.base_layer(x, *args, **kwargs)
        full = super().forward(x, *args, **kwargs)
        if self.strength == 1.0 or self.merged or self.disable_adapters:
            return full
        base = self.base_layer(x, *args, **kwargs)
        return base + self.strength * (full - base)

    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        """The base weight kept on the CPU while merged (a device copy would hold a second
        model's worth of GPU memory for as long as the app draws merged)."""
        weight = self.get_base_layer().weight
        self._unmerged = weight.detach().to("cpu", copy=True)
        super().merge(safe_merge, adapter_names)
        base = self._unmerged.to(weight.device)
        weight.data = base + self.strength * (weight.data - base)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.get_base_layer().weight.data.copy_(self._unmerged)
            del self._unmerged
            self.merged_adapters.clear()


@cache
def _at_a_strength(cls: type) -> type:
    """peft's DoRA layer class (Linear, Conv2d) with `DoraStrength` first."""
    return type(f"{cls.__name__}AtAStrength", (DoraStrength, cls), {})
