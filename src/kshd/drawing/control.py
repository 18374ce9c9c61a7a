"""ControlNet in the engine: a sketch's lines guide the drawing (the project's final goal, a
sketch redrawn in KSH's style), as A1111's ControlNet extension does.

Each control type's ControlNet is loaded when a request first names it and shares the loaded base
model and its merged LoRA with the other pipelines (`from_pipe`), so a sketch is drawn with the
same weights as text-to-image. A1111's control modes: `balanced`; `prompt` ("My prompt is more
important": the control's residuals weighted 0.825^k from the deepest, its soft injection); and
`control` ("ControlNet is more important": the control on the conditional half of CFG only,
diffusers' guess mode).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kshd.config.values import CONTROL_MODE_LABELS, PREPROCESSORS, RESIZE_LABELS
from kshd.drawing.control_images import control_image, preprocessor_for
from kshd.drawing.request import Limits, Request, RequestError, input_picture, resize_input
from kshd.models.source import ModelSourceError, check_model_source, hub_offline, in_hub_cache

log = logging.getLogger(__name__)
CONTROLNET_FILE = "diffusion_pytorch_model.safetensors"
FP16 = "fp16"  # the variant most ControlNet repos also ship: half the download and the memory
HALF = (torch.float16, torch.bfloat16)
SOFT = 0.825  # A1111's soft injection: residual k from the deepest weighted 0.825^k


def sketch_control(req: Request, limits: Limits) -> tuple[Image.Image, str]:
    """The control image of a request's sketch, at the drawing's size, and its preprocessor."""
    if req.control_image is None:
        raise RequestError("control_image", "upload a sketch")
    try:
        sketch = input_picture(req.control_image, limits)
    except RequestError as exc:  # said of the sketch, not of the picture to redraw
        raise RequestError("control_image", str(exc).partition(": ")[2]) from exc
    try:
        name = preprocessor_for(req.control_type, req.preprocessor)
    except ValueError as exc:
        raise RequestError("preprocessor", str(exc)) from exc
    fitted = resize_input(sketch, req.width, req.height, req.resize_mode)
    return control_image(fitted, name), name


def _short_hash(source: str, variant: str | None) -> str | None:
    """A1111's short model hash (the first 8 hex digits of the sha256 of the file loaded), when
    the file is on this machine: a folder, or the local Hugging Face cache."""
    file = Path(source) / _weights_file(variant)
    if not file.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, _weights_file(variant))
        file = Path(cached) if isinstance(cached, str) else None
    if file is None:
        return None
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:8]


class ControlNets:
    """The configured ControlNets (control type -> hub id or folder), each loaded once."""

    def __init__(self, models: dict[str, str], base: Any, device: torch.device, dtype):
        self.models, self.base, self.device, self.dtype = models, base, device, dtype
        self._pipes: dict[str, tuple[Any, Any, str]] = {}

    def pipelines(self, control_type: str) -> tuple[Any, Any, str]:
        """(text-to-image, image-to-image) ControlNet pipelines of the type, and the model's
        name as A1111 writes it (`control_v11p_sd15_canny [d14c016b]`)."""
        if control_type not in self._pipes:
            self._pipes[control_type] = self._load(control_type)
        return self._pipes[control_type]

    def _load(self, control_type: str) -> tuple[Any, Any, str]:
        if control_type not in self.models:
            known = ", ".join(self.models) or "none"
            raise RequestError("control_type", f"{control_type!r} has no ControlNet in "
                               f"generate.control.models (configured: {known})")  # fmt: skip
        source = self.models[control_type]
        key = f"generate.control.models.{control_type}"
        try:
            check_model_source(source, key)
        except ModelSourceError as exc:
            raise RequestError("control_type", str(exc)) from exc
        variant = controlnet_variant(source, self.dtype)
        net = load_controlnet(source, self.dtype, variant)
        check_family(net, self.base, f"config key `{key}` = {source!r}", "control_type")
        if self.device.type != "cpu":
            net.to(self.device)
        txt2img_class, img2img_class = controlnet_pipelines(self.base)
        # dtype: diffusers' from_pipe casts every shared part to fp32 unless told (the base too)
        txt2img = txt2img_class.from_pipe(self.base, controlnet=net, dtype=self.dtype)
        img2img = img2img_class.from_pipe(self.base, controlnet=net, dtype=self.dtype)
        for pipe in (txt2img, img2img):
            pipe.set_progress_bar_config(disable=True)
        short = _short_hash(source, variant)
        name = Path(source.rstrip("/")).name + (f" [{short}]" if short else "")
        log.info("ControlNet %s for %s from %s", name, control_type, source)
        return txt2img, img2img, name


def controlnet_variant(source: str, dtype: torch.dtype) -> str | None:
    """The weights a run in `dtype` loads: a half-precision run the repo's fp16 variant where
    it has one (an SDXL ControlNet: 2.5 GB instead of 5), else (None) its full file."""
    return FP16 if dtype in HALF and _has_variant(source, FP16) else None


def load_controlnet(source: str, dtype: torch.dtype, variant: str | None):
    """A ControlNet from its hub id or folder in `dtype`, from the `variant` file."""
    from diffusers import ControlNetModel

    log.info("ControlNet %s: %s weights", source, variant or "full")
    return ControlNetModel.from_pretrained(
        source, dtype=dtype, variant=variant, use_safetensors=True
    )


def _weights_file(variant: str | None) -> str:
    """diffusers' name of a variant's file: diffusion_pytorch_model.fp16.safetensors."""
    return CONTROLNET_FILE if variant is None else CONTROLNET_FILE.replace(".", f".{variant}.", 1)


def _has_variant(source: str, variant: str) -> bool:
    """The folder or Hub repo holds that variant of the weights (a cached full file is used
    as it is rather than fetching the variant; offline, only what the cache holds counts)."""
    name = _weights_file(variant)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return (folder / name).is_file()
    if in_hub_cache(source, name):
        return True
    if in_hub_cache(source, CONTROLNET_FILE) or hub_offline():
        return False
    from huggingface_hub import file_exists

    try:
        return file_exists(source, name)
    except Exception:  # noqa: BLE001 (unreachable: the full file's download says why)
        return False


def is_sdxl(model) -> bool:
    """An SDXL UNet or ControlNet (conditioned on pooled text and sizes), or an SDXL pipeline."""
    unet = getattr(model, "unet", model)
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def check_family(model, base, what: str, field: str) -> None:
    """A ControlNet or inpainting UNet made for the base's family, else one line saying so."""
    if is_sdxl(model) != is_sdxl(base):
        families = ("SDXL", "SD 1.x") if is_sdxl(model) else ("SD 1.x", "SDXL")
        raise RequestError(field, f"{what} is an {families[0]} model and the base is "
                           f"{families[1]}: name one made for {families[1]} "
                           "(+experiment=sdxl sets SDXL ControlNets)")  # fmt: skip


def controlnet_pipelines(base) -> tuple[type, type]:
    """The (text-to-image, image-to-image) ControlNet pipeline classes of the base's family."""
    import diffusers

    xl = "XL" if is_sdxl(base) else ""
    return (getattr(diffusers, f"StableDiffusion{xl}ControlNetPipeline"),
            getattr(diffusers, f"StableDiffusion{xl}ControlNetImg2ImgPipeline"))  # fmt: skip


def control_call(req: Request, control: Image.Image, picture: Image.Image | None) -> dict:
    """The ControlNet pipeline's arguments of a request (with or without an init picture)."""
    unit = {
        "controlnet_conditioning_scale": req.control_weight,
        "control_guidance_start": req.guidance_start,
        "control_guidance_end": req.guidance_end,
        "guess_mode": req.control_mode == "control",
    }
    if picture is None:
        return {"image": control, "width": req.width, "height": req.height, **unit}
    return {"image": picture, "control_image": control, "strength": req.strength, **unit}


@contextmanager
def soft_injection(net: torch.nn.Module | None, on: bool) -> Iterator[None]:
    """While on, the ControlNet's residuals are weighted 0.825^k, k counted from the deepest
    (the middle block's is k = 0), as A1111's "My prompt is more important"."""
    if net is None or not on:
        yield
        return
    forward = net.forward

    def soft(*args, **kwargs):
        out = forward(*args, **kwargs)
        down, mid = (out[0], out[1]) if isinstance(out, tuple) else (
            out.down_block_res_samples, out.mid_block_res_sample)  # fmt: skip
        n = len(down)
        down = [d * SOFT ** (n - i) for i, d in enumerate(down)]
        return (down, mid)

    net.forward = soft
    try:
        yield
    finally:
        del net.forward  # the class's own again


def unit_infotext(req: Request, preprocessor: str, model: str) -> str:
    """The ControlNet unit in A1111's `parameters` (`ControlNet 0: "Module: ..., ..."`)."""
    parts = {
        "Module": preprocessor,
        "Model": model,
        "Weight": f"{req.control_weight:g}",
        "Resize Mode": RESIZE_LABELS[req.resize_mode],
        "Guidance Start": f"{req.guidance_start:g}",
        "Guidance End": f"{req.guidance_end:g}",
        "Control Mode": CONTROL_MODE_LABELS[req.control_mode],
    }
    return ", ".join(f"{k}: {v}" for k, v in parts.items())


def read_unit(unit: str, models: Mapping[str, str]) -> tuple[dict, list[str]]:
    """The Request fields of A1111's `ControlNet 0` unit, and what of it cannot be used (its
    model is found among `models`, control type -> id or folder, by its name)."""
    parts = dict(p.split(": ", 1) for p in unit.split(", ") if ": " in p)
    out, unused = {}, []
    name = parts.get("Model", "").split(" [")[0]
    types = [t for t, source in models.items() if source.rstrip("/").split("/")[-1] == name]
    if types:
        out["control_type"] = types[0]
    else:
        unused.append(f"ControlNet model {name or '?'}")
    if parts.get("Module") in PREPROCESSORS:
        out["preprocessor"] = parts["Module"]
    modes = {v: k for k, v in CONTROL_MODE_LABELS.items()}
    resizes = {v: k for k, v in RESIZE_LABELS.items()}
    readers = {"Weight": ("control_weight", float), "Guidance Start": ("guidance_start", float),
               "Guidance End": ("guidance_end", float), "Control Mode": ("control_mode", modes.get),
               "Resize Mode": ("resize_mode", resizes.get)}  # fmt: skip
    for key, (field, read) in readers.items():
        try:
            value = read(parts[key]) if key in parts else None
        except ValueError:
            value = None
        if value is not None:
            out[field] = value
    return out, unused
