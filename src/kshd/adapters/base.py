"""The adapter seam: what every kind of adapter does for training, for its two files and for
drawing.

A kind is a subclass of `Adapter` in its own file (`lora.py`, `locon.py`), listed in
`registry.py`, with its settings class in `kshd.config.schema_adapters` and its YAML in
conf/train/adapter/. The training loop, the train stage, the app's engine and the evaluation
call only these methods. The defaults here serve adapters built on peft's tuner layers (LoRA
and its kin: LoHa, LoKr, DoRA); a kind that is not overrides them.

Drawing's methods are class methods: a file says which kind it is (`claims`), and drawing needs
no training settings. A layer of a kind (`layers`) follows peft's `BaseTunerLayer` protocol:
`set_scale(name, scale)`, `merge(adapter_names=[name])`, `unmerge()`, `merged`,
`get_base_layer()`; the engine merges it at a strength and restores the base weights exactly.
The evaluation draws unmerged at a strength through diffusers' `cross_attention_kwargs` and
`scale_lora_layers`, which scale any peft tuner layer (a kind outside peft would need a hook
there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from kshd.config.schema_adapters import AdapterSettings

Weights = Path | Mapping[str, torch.Tensor]  # a file others load, or tensors in its format
PARTS = ("unet", "text_encoder", "text_encoder_2")  # a pipeline's parts an adapter may adapt


def add_peft(model, config, name: str = "default") -> None:
    """A peft adapter into `model`: diffusers' `add_adapter` for a UNet (its adapter
    bookkeeping), peft's own `inject_adapter_in_model` for a text encoder, because transformers
    5's `add_adapter` demands peft >= 0.22 (unreleased) although peft 0.21 injects, trains and
    saves CLIP adapters correctly."""
    from diffusers import ModelMixin
    from peft import inject_adapter_in_model

    if isinstance(model, ModelMixin):
        model.add_adapter(config, adapter_name=name)
    else:
        inject_adapter_in_model(config, model, adapter_name=name)


class Adapter:
    """One kind of adapter, configured: `settings` (`train.adapter`), `rank` and `alpha`
    (`train.rank` / `train.alpha`, kohya's network_dim / network_alpha)."""

    kind: ClassVar[str]  # its `train.adapter.kind`
    network_module: ClassVar[str]  # kohya's `ss_network_module`: how A1111/ComfyUI read it

    def __init__(self, settings: AdapterSettings, rank: int, alpha: float):
        self.settings, self.rank, self.alpha = settings, rank, alpha

    # --- training ------------------------------------------------------------------------

    def inject(self, model, text_encoder: bool = False) -> None:
        """Attach trainable layers to `model` (a UNet, or a text encoder's own targets); every
        other weight of the model stays frozen."""
        raise NotImplementedError

    def adapted(self, model) -> bool:
        """Whether `model` carries this adapter (a text encoder does only when trained)."""
        return bool(getattr(model, "peft_config", None))

    def model_tensors(self, model) -> dict[str, torch.Tensor]:
        """The adapter's trained tensors in `model` (detached, fp32, on the CPU)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}

    def load_model_tensors(self, model, state: Mapping[str, torch.Tensor]) -> None:
        """Put tensors that `model_tensors` gave back into `model`'s adapter (resuming)."""
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, dict(state))

    def tensors(self, unet, text_encoder=None, text_encoder_2=None) -> dict[str, torch.Tensor]:
        """Every adapted part's tensors, keys prefixed `unet.` / `text_encoder.` (/ SDXL's
        `text_encoder_2.`): what a checkpoint holds and the files are made from."""
        out: dict[str, torch.Tensor] = {}
        for prefix, model in zip(PARTS, (unet, text_encoder, text_encoder_2), strict=True):
            if model is not None and self.adapted(model):
                out |= {f"{prefix}.{k}": v for k, v in self.model_tensors(model).items()}
        return out

    def load_tensors(
        self, state: Mapping[str, torch.Tensor], unet, text_encoder=None, text_encoder_2=None
    ) -> None:
        """`tensors`' state put back into the parts (a checkpoint resumed)."""
        for prefix, model in zip(PARTS, (unet, text_encoder, text_encoder_2), strict=True):
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(f"{prefix}.")}
            if part and model is not None:
                self.load_model_tensors(model, part)

    # --- the files -----------------------------------------------------------------------

    def diffusers_tensors(self, state: Mapping[str, torch.Tensor]) -> dict | None:
        """The diffusers file (`pipe.load_lora_weights`) from `state` (keys prefixed by the
        part: `unet.`, `text_encoder.`...); None where diffusers cannot read this kind, and
        only the kohya file is written."""
        return None

    def kohya_tensors(
        self, state: Mapping[str, torch.Tensor], sdxl: bool, unet_config: Mapping | None
    ) -> dict[str, torch.Tensor]:
        """The kohya/A1111 file's tensors (`lora_unet_...` names, their `.alpha`)."""
        raise NotImplementedError

    def network_metadata(self) -> dict[str, object]:
        """The kohya file's `ss_network_*` fields, as kohya writes them for this kind."""
        return {
            "ss_network_module": self.network_module,
            "ss_network_dim": str(self.rank),
            "ss_network_alpha": str(self.alpha),
        }

    def record(self) -> dict[str, Any]:
        """What a checkpoint records so that drawing loads its tensors without the config."""
        settings = dataclasses.asdict(self.settings)
        return {"kind": self.kind, "rank": self.rank, "alpha": self.alpha, "settings": settings}

    # --- drawing -------------------------------------------------------------------------

    @classmethod
    def claims(cls, keys: Collection[str], metadata: Mapping[str, str]) -> bool:
        """Whether a file with these tensor names and metadata is of this kind, e.g. by its
        `ss_network_module` or its tensors' names. The default kind
        (`registry.DEFAULT_KIND`) takes every file no other kind claims."""
        return False

    @classmethod
    def checkpoint_weights(cls, state: Mapping[str, torch.Tensor], record: Mapping) -> Weights:
        """A checkpoint's tensors (`tensors` of each part, prefixed) as `attach` takes them."""
        return state

    @classmethod
    def attach(cls, pipe, weights: Weights, name: str) -> None:
        """Load `weights` into the pipeline's UNet and text encoder(s), unmerged, at the
        strength they were saved with (the app's strength 1)."""
        raise NotImplementedError

    @classmethod
    def attach_unet(cls, pipe, unet, weights: Weights, name: str) -> None:
        """Load the UNet part of `weights` into another UNet of the pipeline's family (an
        inpainting model's), unmerged."""
        raise NotImplementedError

    @classmethod
    def detach(cls, pipe) -> None:
        """Remove every layer of this kind from the pipeline (weights as before `attach`)."""
        pipe.unload_lora_weights()  # diffusers removes any peft tuner layer

    @classmethod
    def enable(cls, pipe, on: bool) -> None:
        """Switch the attached layers on or off (off: the base model draws)."""
        if on:
            pipe.enable_lora()
        else:
            pipe.disable_lora()

    @classmethod
    def layers(cls, model) -> Iterator[tuple[str, Any]]:
        """(name, layer) of every layer of this kind in `model`."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                yield name, module
