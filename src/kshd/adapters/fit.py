"""Whether an adapter's weights fit the base model in use, told before any layer is touched: a
LoRA of the other family (or SD 2.x, Flux...) would otherwise fail deep in the loader with
hundreds of lines of size mismatches, or load half of its modules and draw wrong.

A file says its base in the `ss_*` fields kohya writes (`ss_base_model_version`: `sd_v1`,
`sdxl_base_v1-0`; `ss_sd_model_name`) or in `modelspec.architecture`; a file without them (many
A1111 / Civitai files, diffusers' files, training checkpoints) in its tensors: SDXL's second text
encoder (`lora_te2_`, `text_encoder_2.`), SD 1.x's single one (`lora_te_`), and the width of the
text embeddings its cross-attention layers take (`attn2.to_k`'s input: 768 for SD 1.x, 1024 for
SD 2.x, 2048 for SDXL), compared with the base's UNet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kshd.config.errors import UserError
from kshd.models.family import FAMILY_NAMES, SD1, SDXL

# the input of a cross-attention key/value projection's first factor: the text embedding width
_CROSS = re.compile(
    r"attn2[._](?:processor[._])?to_[kv](?:_lora)?[._]"
    r"(?:lora_down\.weight|lora_A\.weight|down\.weight|hada_w[12]_b)$"
)


class LoraRefused(UserError, ValueError):
    """A LoRA the base in use cannot load: one line naming the key, the file and both bases."""


@dataclass(frozen=True)
class LoraBase:
    """What weights say of the base they were made for: its family (SD1, SDXL, another
    family's name as written, None: not said), what says so, and the text embedding width
    its cross-attention takes (None: no such layer)."""

    family: str | None
    said: str
    width: int | None


def read_base(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]) -> LoraBase:
    """The base of weights with these tensor shapes (by name) and file metadata."""
    width = next((s[-1] for k, s in shapes.items() if _CROSS.search(k) and s), None)
    version = metadata.get("ss_base_model_version") or ""
    model = metadata.get("ss_sd_model_name")
    said = ", ".join(f"{k} {v}" for k, v in (("ss_base_model_version", version),
                                             ("ss_sd_model_name", model)) if v)  # fmt: skip
    if version:
        family = SDXL if version.startswith("sdxl") else (
            SD1 if version.startswith("sd_v1") else version)  # fmt: skip
        return LoraBase(family, said, width)
    if arch := metadata.get("modelspec.architecture"):
        family = SDXL if arch.startswith("stable-diffusion-xl") else (
            SD1 if arch.startswith("stable-diffusion-v1") else arch.split("/")[0])  # fmt: skip
        return LoraBase(family, f"modelspec.architecture {arch}", width)
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in shapes):
        return LoraBase(SDXL, "its second text encoder's tensors", width)
    if any(k.startswith("lora_te_") for k in shapes):
        return LoraBase(SD1, "its text encoder's tensor names", width)
    return LoraBase(None, "its tensors", width)


def file_base(path: str | Path) -> LoraBase:
    """The base a `.safetensors` adapter file was made for, from its header alone."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        return read_base(shapes, f.metadata() or {})


def tensors_base(tensors: Mapping) -> LoraBase:
    """The base of weights held as tensors (a training checkpoint's)."""
    return read_base({k: tuple(v.shape) for k, v in tensors.items()}, {})


def pipe_base(pipe) -> tuple[str, int | None]:
    """(family, text embedding width of its UNet's cross-attention) of a pipeline."""
    family = SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD1
    return family, getattr(pipe.unet.config, "cross_attention_dim", None)


def misfit(base: LoraBase, family: str, width: int | None) -> str | None:
    """Why weights of `base` do not fit a base of `family` and `width`; None when they may."""
    named = FAMILY_NAMES.get(base.family, base.family)
    if base.family is not None and base.family != family:
        return f"is a LoRA for {named} ({base.said})"
    if base.width is not None and width is not None and base.width != width:
        return (f"is a LoRA for a base whose text embeddings are {base.width} wide "
                f"({base.said}; {named or 'family not recorded'})")  # fmt: skip
    return None


def check_fits(base: LoraBase, pipe, key: str, path: str | Path, base_model: str) -> None:
    """LoraRefused, one line naming `key`, the file, its base and `base_model` (the base in
    use), when weights of `base` do not fit `pipe`."""
    family, width = pipe_base(pipe)
    why = misfit(base, family, width)
    if why is None:
        return
    ours = FAMILY_NAMES[family] + (f", text embeddings {width} wide" if "wide" in why else "")
    raise LoraRefused(
        f"{key}: {path} {why}; the base in use, {base_model}, is {ours}: choose a LoRA made "
        f"for this base, or draw with that LoRA's own base (model.pretrained)"
    )
