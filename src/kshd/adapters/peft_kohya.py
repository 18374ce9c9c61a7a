"""What the adapter kinds built on a peft tuner that diffusers' loader cannot read (LoHa, LoKr,
DoRA) share: their kohya/LyCORIS file made from peft's tensors, and that file read back into
peft layers of the kind injected into a pipeline, so that the engine's strength, merge and
unmerge (peft's `BaseTunerLayer` protocol) and the evaluation's unmerged strength work as for
LoRA.

A kind says which peft config it trains (`peft_config`, `loading_config`), how its tensors are
named in the file (`params`: peft's name -> LyCORIS' suffix) and, where peft and LyCORIS differ,
how one module's tensors convert (`module_to_kohya` / `module_from_kohya`).

Each module's alpha and rank travel with the tensors (`<module>.alpha`, `<module>.rank` in
`tensors()`, so in checkpoints): a conv layer trained at its own rank and alpha (kohya's
conv_dim / conv_alpha) keeps them in every file made from a checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch

from kshd.adapters.base import PARTS, Adapter, Weights, add_peft
from kshd.adapters.kohya_names import kohya_module_name, kohya_module_names
from kshd.config.fill import variants
from kshd.config.schema_adapters import AdapterSettings
from kshd.models.ldm_names import unet_prefixes

NUMBERS = ("alpha", "rank")  # per-module numbers beside a module's tensors in `tensors()`


class PeftKohyaAdapter(Adapter):
    """A peft tuner kind saved only as a kohya/LyCORIS file (`lycoris.kohya`)."""

    network_module = "lycoris.kohya"
    algo: ClassVar[str]  # LyCORIS' `algo` network arg
    params: ClassVar[dict[str, str]]  # peft's parameter name (after the module) -> file suffix
    rank_tensors: ClassVar[tuple[str, ...]]  # file suffixes whose first dimension is the rank
    marks: ClassVar[tuple[str, ...]]  # key endings that say a file is of this kind

    # --- the kind's own part ---------------------------------------------------------------

    def peft_config(self, targets: list[str], ranks: dict[str, int], alphas: dict[str, float]):
        """The peft config that trains this kind on `targets` (module-name suffixes); `ranks` /
        `alphas`: the conv layers' own (peft's rank_pattern / alpha_pattern)."""
        raise NotImplementedError

    @classmethod
    def loading_config(cls, targets: list[str], ranks: dict, alphas: dict, modules: dict):
        """The peft config that holds a file's modules (`modules`: path -> peft tensors) at
        their ranks and alphas; the tensors replace whatever peft initialized."""
        raise NotImplementedError

    def network_args(self) -> dict[str, str]:
        """LyCORIS' network args beside `algo`, strings as kohya records `--network_args`."""
        return {"conv_dim": str(self.conv_rank), "conv_alpha": str(self.conv_alpha)}

    def module_to_kohya(self, params: dict[str, torch.Tensor], rank: int, alpha: float) -> dict:
        """One module's peft tensors -> its tensors in the file (suffix -> tensor)."""
        out = {self.params[p]: t.contiguous() for p, t in params.items()}
        return out | {"alpha": torch.tensor(float(alpha))}

    @classmethod
    def module_from_kohya(cls, tensors: Mapping[str, torch.Tensor]) -> tuple[dict, int, float]:
        """One module's tensors in a file -> (peft tensors, rank, alpha), as readers scale it
        (alpha / rank; a file without alpha applies its delta at 1)."""
        back = {suffix: p for p, suffix in cls.params.items()}
        params = {back[s]: t for s, t in tensors.items() if s in back}
        rank = cls.file_rank(tensors)
        alpha = float(tensors["alpha"]) if "alpha" in tensors else float(rank)
        return params, rank, alpha

    @classmethod
    def file_rank(cls, tensors: Mapping[str, torch.Tensor]) -> int:
        """The rank A1111 and ComfyUI divide a module's alpha by (1 where the module has no
        low-rank factor: a LoKr of full factors)."""
        return next((int(tensors[n].shape[0]) for n in cls.rank_tensors if n in tensors), 1)

    @classmethod
    def claims(cls, keys, metadata) -> bool:
        return any(k.endswith(cls.marks) for k in keys)

    # --- training --------------------------------------------------------------------------

    @property
    def conv_rank(self) -> int:
        return self.settings.conv_rank or self.rank

    @property
    def conv_alpha(self) -> float:
        return self.settings.conv_alpha if self.settings.conv_alpha is not None else self.alpha

    def inject(self, model, text_encoder: bool = False) -> None:
        """The kind's trainable layers on the settings' targets; 3x3 (k > 1) convs at the conv
        rank and alpha, as LyCORIS gives them conv_dim / conv_alpha."""
        s = self.settings
        targets = list(s.text_encoder_target_modules if text_encoder else s.target_modules)
        model.requires_grad_(False)
        convs = [n for n, m in model.named_modules() if _spatial_conv(m)
                 and any(n == t or n.endswith(f".{t}") for t in targets)]  # fmt: skip
        ranks = {re.escape(n): self.conv_rank for n in convs}
        alphas = {re.escape(n): self.conv_alpha for n in convs}
        add_peft(model, self.peft_config(targets, ranks, alphas))

    def model_tensors(self, model) -> dict[str, torch.Tensor]:
        """peft's tensors, and each adapted module's alpha and rank."""
        out = super().model_tensors(model)
        for path, layer in self.layers(model):
            alpha, rank = _layer_numbers(layer, "default")
            out[f"{path}.alpha"] = torch.tensor(float(alpha))
            out[f"{path}.rank"] = torch.tensor(float(rank))
        return out

    def load_model_tensors(self, model, state: Mapping[str, torch.Tensor]) -> None:
        super().load_model_tensors(model, {k: v for k, v in state.items()
                                           if k.rpartition(".")[2] not in NUMBERS})  # fmt: skip

    # --- the files -------------------------------------------------------------------------

    def network_metadata(self) -> dict[str, object]:
        return super().network_metadata() | {
            "ss_network_args": {"algo": self.algo, **self.network_args()}
        }

    def kohya_tensors(
        self, state: Mapping[str, torch.Tensor], sdxl: bool, unet_config: Mapping | None
    ) -> dict[str, torch.Tensor]:
        """LyCORIS' names: `lora_unet_<module>.<suffix>` (an SDXL UNet's modules under their
        SGM names), `lora_te_...` / `lora_te1_...` / `lora_te2_...`, an `.alpha` per module."""
        prefixes = unet_prefixes(unet_config) if sdxl and unet_config is not None else None
        out: dict[str, torch.Tensor] = {}
        for (part, module), params in self.modules(state).items():
            alpha, rank = params.pop("alpha", None), params.pop("rank", None)
            alpha = float(alpha) if alpha is not None else self.alpha
            rank = int(rank) if rank is not None else self.rank
            name = kohya_module_name(part, module, sdxl, prefixes)
            for suffix, tensor in self.module_to_kohya(params, rank, alpha).items():
                out[f"{name}.{suffix}"] = tensor
        return out

    @classmethod
    def modules(cls, state: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], dict]:
        """Prefixed peft keys grouped by (part, module path): {parameter: tensor}."""
        names = sorted((*cls.params, *NUMBERS), key=len, reverse=True)
        out: dict[tuple[str, str], dict] = {}
        for key, tensor in state.items():
            part, _, rest = key.partition(".")
            if part not in PARTS:
                raise ValueError(f"{key}: not a tensor of a pipeline's part ({', '.join(PARTS)})")
            param = next((n for n in names if rest.endswith(f".{n}")), None)
            if param is None:
                raise ValueError(f"{key}: not a tensor of a {cls.kind} adapter")
            out.setdefault((part, rest[: -len(param) - 1]), {})[param] = tensor
        return out

    @classmethod
    def checkpoint_weights(cls, state: Mapping[str, torch.Tensor], record: Mapping) -> dict:
        """A checkpoint's tensors in the kohya format (the UNet under diffusers' names, which
        `attach` reads as well as SGM's)."""
        settings = variants(AdapterSettings)[record["kind"]](**record["settings"])
        adapter = cls(settings, record["rank"], record["alpha"])
        return adapter.kohya_tensors(state, "text_encoder_2" in {k.split(".")[0] for k in state},
                                     None)  # fmt: skip

    # --- drawing -----------------------------------------------------------------------------

    @classmethod
    def attach(cls, pipe, weights: Weights, name: str) -> None:
        """Every module of the file into the UNet and text encoder(s); a module that names no
        layer of this model is refused (a file of another family)."""
        modules = _file_modules(weights)
        sdxl = getattr(pipe, "text_encoder_2", None) is not None
        for part in PARTS:
            if getattr(pipe, part, None) is not None:
                cls._attach_part(getattr(pipe, part), part, sdxl, modules, name)
        if modules:
            raise ValueError(f"{len(modules)} modules of this {cls.kind} file name no layer of the "
                             f"model, e.g. {sorted(modules)[0]}")  # fmt: skip

    @classmethod
    def attach_unet(cls, pipe, unet, weights: Weights, name: str) -> None:
        sdxl = getattr(pipe, "text_encoder_2", None) is not None
        cls._attach_part(unet, "unet", sdxl, _file_modules(weights), name)

    @classmethod
    def _attach_part(cls, model, part: str, sdxl: bool, modules: dict, name: str) -> None:
        """The file's modules that name layers of `model` (taken out of `modules`), injected at
        their ranks and alphas and given the file's tensors."""
        names = kohya_module_names(model, part, sdxl)
        found = {names[k]: cls.module_from_kohya(modules.pop(k)) for k in list(modules)
                 if k in names}  # fmt: skip
        if not found:
            return
        paths = sorted(found)
        ranks = {re.escape(p): found[p][1] for p in paths}
        alphas = {re.escape(p): found[p][2] for p in paths}
        config = cls.loading_config(paths, ranks, alphas, {p: found[p][0] for p in paths})
        add_peft(model, config, name)
        for path in paths:
            _load_layer(model.get_submodule(path), name, found[path][0])
            cls.drawing_layer(model.get_submodule(path))

    @classmethod
    def drawing_layer(cls, layer) -> None:
        """Makes a layer loaded for drawing follow the apps' strength where peft's differs."""

    @classmethod
    def detach(cls, pipe) -> None:
        """Every peft layer out of the parts, their base layers back in place."""
        for part in PARTS:
            model = getattr(pipe, part, None)
            if model is None:
                continue
            for path, layer in list(cls.layers(model)):
                parent, _, child = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child,
                        layer.get_base_layer())  # fmt: skip
            if hasattr(model, "peft_config"):
                del model.peft_config
            if getattr(model, "_hf_peft_config_loaded", False):
                model._hf_peft_config_loaded = False

    @classmethod
    def enable(cls, pipe, on: bool) -> None:
        for part in PARTS:
            model = getattr(pipe, part, None)
            for _, layer in cls.layers(model) if model is not None else ():
                layer.enable_adapters(on)


def _spatial_conv(module) -> bool:
    """A conv with a kernel over 1x1 (LyCORIS' conv layers; a 1x1 conv counts as linear)."""
    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def _layer_numbers(layer, name: str) -> tuple[float, int]:
    """(alpha, rank) of one peft layer: LoRA's `lora_alpha`, the LyCORIS kinds' `alpha`."""
    alpha = layer.lora_alpha if hasattr(layer, "lora_alpha") else layer.alpha
    return alpha[name], layer.r[name]


def _file_modules(weights: Weights) -> dict[str, dict[str, torch.Tensor]]:
    """A kohya file's (or tensors') modules: {module name: {suffix: tensor}}."""
    if isinstance(weights, Path):
        from safetensors.torch import load_file

        weights = load_file(str(weights))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        module, _, suffix = key.partition(".")
        out.setdefault(module, {})[suffix] = tensor
    return out


@torch.no_grad()
def _load_layer(layer, name: str, params: Mapping[str, torch.Tensor]) -> None:
    """A file's tensors into one injected layer: a module's weight (`lora_A.weight`, DoRA's
    `lora_magnitude_vector`) copied in its shape; a LyCORIS parameter (`hada_w1_a`) put in
    place whatever shape peft chose (a LoKr file may factor a layer otherwise), and the ones
    the file lacks dropped."""
    ref = layer.get_base_layer().weight
    for param, tensor in params.items():
        head, _, tail = param.partition(".")
        container = getattr(layer, head)
        if isinstance(container, torch.nn.ModuleDict):  # DoRA's magnitude: `.weight` too
            target = getattr(container[name], tail or "weight")
            target.copy_(tensor.reshape(target.shape))
        else:
            dtype = container[name].dtype if name in container else ref.dtype
            container[name] = torch.nn.Parameter(tensor.to(ref.device, dtype), requires_grad=False)
    for head in getattr(layer, "adapter_layer_names", ()):
        container = getattr(layer, head)
        lacking = head not in params and name in container
        if isinstance(container, torch.nn.ParameterDict) and lacking:
            del container[name]
