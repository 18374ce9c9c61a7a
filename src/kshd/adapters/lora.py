"""LoRA (peft) on the UNet and the text encoders: trained, saved for diffusers and for
AUTOMATIC1111/ComfyUI (kohya), loaded for drawing through diffusers' LoRA loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from kshd.adapters.base import Adapter, Weights, add_peft
from kshd.adapters.kohya_names import kohya_text_encoder_name, sgm_unet_keys


class LoraAdapter(Adapter):
    """kohya's `networks.lora`: `lora_down` / `lora_up` with an `.alpha` per module. The
    default kind: drawing gives it every file no other kind claims, in any LoRA format
    diffusers' loader reads (diffusers', kohya's, A1111's)."""

    kind = "lora"
    network_module = "networks.lora"

    def inject(self, model, text_encoder: bool = False) -> None:
        """A trainable LoRA on the settings' UNet (or text-encoder) targets; the rest frozen."""
        from peft import LoraConfig

        s = self.settings
        targets = s.text_encoder_target_modules if text_encoder else s.target_modules
        model.requires_grad_(False)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                            target_modules=list(targets))  # fmt: skip
        add_peft(model, config)

    def diffusers_tensors(self, state: Mapping[str, torch.Tensor]) -> dict:
        return diffusers_state(state, self.alpha / self.rank)

    def kohya_tensors(
        self, state: Mapping[str, torch.Tensor], sdxl: bool, unet_config: Mapping | None
    ) -> dict[str, torch.Tensor]:
        """diffusers' peft -> kohya conversion, the text encoders under kohya's names, an SDXL
        UNet under its original (SGM) block names, `lora_unet_input_blocks_4_1_...`, as kohya's
        sdxl_train_network.py writes them (A1111, ComfyUI and diffusers read them)."""
        from diffusers.utils import convert_state_dict_to_kohya

        if sdxl and unet_config is not None:
            state = sgm_unet_keys(state, unet_config, ".lora_")
        kohya = {
            kohya_text_encoder_name(k, sdxl): v
            for k, v in convert_state_dict_to_kohya(dict(state)).items()
        }
        for key in [k for k in kohya if k.endswith(".lora_down.weight")]:
            kohya[key.replace(".lora_down.weight", ".alpha")] = torch.tensor(float(self.alpha))
        return kohya

    @classmethod
    def checkpoint_weights(cls, state: Mapping[str, torch.Tensor], record: Mapping) -> dict:
        """Raw peft tensors scaled by the run's alpha / rank into the diffusers format."""
        return diffusers_state(state, record["alpha"] / record["rank"])

    @classmethod
    def attach(cls, pipe, weights: Weights, name: str) -> None:
        """diffusers' loader: the diffusers file, a kohya/A1111 file, or a state dict."""
        if isinstance(weights, Path):
            pipe.load_lora_weights(
                str(weights.parent), weight_name=weights.name, adapter_name=name,
                use_safetensors=True,
            )  # fmt: skip
        else:
            pipe.load_lora_weights(dict(weights), adapter_name=name)

    @classmethod
    def attach_unet(cls, pipe, unet, weights: Weights, name: str) -> None:
        if isinstance(weights, Path):  # SD 1.x's or SDXL's reader (kohya names converted)
            weights, *_ = type(pipe).lora_state_dict(
                str(weights.parent), weight_name=weights.name, use_safetensors=True
            )
        unet_part = {k: v for k, v in weights.items() if k.startswith("unet.")}
        unet.load_lora_adapter(unet_part, prefix="unet", adapter_name=name)

    @classmethod
    def layers(cls, model):
        from peft.tuners.lora import LoraLayer

        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                yield name, module


def diffusers_state(state: Mapping[str, torch.Tensor], strength: float) -> dict[str, torch.Tensor]:
    """Prefixed peft keys (a checkpoint's tensors) -> what load_lora_weights takes.

    The keys stay in peft's naming: diffusers' `convert_state_dict_to_diffusers` renames only
    attention layers, and a file mixing its names with peft's (a LoRA on convs or feed-forward
    layers too) loads only the peft-named half. `strength` (alpha / rank) is folded into
    `lora_B`, since load_lora_weights reads no alpha from such a file and would apply alpha = rank.
    """
    return {
        k: v * strength if ".lora_B." in k else v
        for k, v in state.items()
        if k.startswith(("unet.", "text_encoder.", "text_encoder_2."))
    }
