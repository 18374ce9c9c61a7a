"""Inpainting: redraw the masked part of a picture (white in the mask) and keep the rest, as
A1111 does with a regular (4-channel) model.

diffusers' inpainting pipeline blends the picture's latents back outside the mask at every step
(its path for 4-channel UNets), and "only masked" crops the mask's region (with `padding`
around it, widened to the drawing's aspect ratio), draws it at the full drawing size and pastes
it back (its `padding_mask_crop`, A1111's code). Then, as A1111 does, the picture's own pixels are
put back outside the blurred mask, so the VAE never changes what the user did not mask.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from kshd.config.values import INPAINT_AREA_LABELS
from kshd.data.images import ImageRejected, IntakeRules, load_image
from kshd.drawing.request import Limits, Request, RequestError, input_picture, resize_input


def _mask(value, size: tuple[int, int], limits: Limits) -> Image.Image:
    """The mask as 0/255 grey levels at `size`: white = redraw. A mask with transparency
    (strokes painted on nothing, as a brush layer) masks its opaque strokes, whatever colour."""
    if isinstance(value, Image.Image):
        has_alpha = value.mode in ("RGBA", "LA") or "transparency" in value.info
        grey = value.convert("RGBA").getchannel("A") if has_alpha else value.convert("L")
    else:
        grey = _mask_file(Path(value), limits)
    binary = grey.resize(size, Image.Resampling.NEAREST).point(lambda v: 255 if v > 127 else 0)
    if not np.asarray(binary).any():
        raise RequestError("mask", "nothing is masked: paint the part to redraw in white")
    return binary


def _mask_file(path: Path, limits: Limits) -> Image.Image:
    """A mask file through the picture intake (its checks and limits), read on black and on
    white: where the two differ the file is transparent, and then its opaque pixels mask."""
    loads = []
    for ground in ((0, 0, 0), (255, 255, 255)):
        rules = IntakeRules(
            background=ground,
            min_side=8,
            max_pixels=limits.max_upload_pixels,
            limit_key="generate.limits.max_upload_pixels",
        )
        try:
            loads.append(np.asarray(load_image(path, rules).image.convert("RGB")))
        except ImageRejected as exc:
            raise RequestError("mask", f"{path.name}: {exc.reason}") from exc
    same = (loads[0] == loads[1]).all(axis=2)
    if same.all():
        return Image.fromarray(loads[0]).convert("L")
    return Image.fromarray(np.where(same, 255, 0).astype(np.uint8))


def inpaint_inputs(req: Request, limits: Limits) -> tuple[Image.Image, Image.Image]:
    """(the picture, the blurred mask), at the drawing's size, or for "only masked" at the
    picture's own (only the crop is drawn at the drawing's size)."""
    picture = input_picture(req.image, limits)
    if req.inpaint_area == "whole":
        picture = resize_input(picture, req.width, req.height, req.resize_mode)
    mask = _mask(req.mask, picture.size, limits)
    if req.inpaint_area == "whole" and req.resize_mode == "fill":
        mask = ImageOps.pad(mask, picture.size, color=0)  # the white padding is not redrawn
    if req.mask_blur:
        mask = mask.filter(ImageFilter.GaussianBlur(req.mask_blur))
    return picture, mask


def inpaint_call(req: Request, picture: Image.Image, mask: Image.Image) -> dict:
    """The inpainting pipeline's own arguments."""
    crop = req.inpaint_padding if req.inpaint_area == "only_masked" else None
    return {"image": picture, "mask_image": mask, "strength": req.strength,
            "width": req.width, "height": req.height, "padding_mask_crop": crop}  # fmt: skip


def paste_back(drawn: Image.Image, picture: Image.Image, mask: Image.Image) -> Image.Image:
    """The drawing inside the (blurred) mask, the picture's own pixels everywhere else."""
    if drawn.size != picture.size:
        drawn = drawn.resize(picture.size, Image.Resampling.LANCZOS)
    return Image.composite(drawn.convert("RGB"), picture.convert("RGB"), mask)


def inpaint_params(req: Request) -> dict[str, object]:
    """A1111's `parameters` keys of an inpainting."""
    only = req.inpaint_area == "only_masked"
    return {
        "Mask blur": req.mask_blur,
        "Inpaint area": INPAINT_AREA_LABELS[req.inpaint_area],
        "Masked area padding": req.inpaint_padding if only else None,
    }


def inpaint_pipeline(base, model: str | None, attach_adapter: Callable | None):
    """The inpainting pipeline: the base model's own components (its UNet blended at each
    step, A1111's way for regular models), or with `model`, a 9-channel inpainting model's UNet
    in place of the base's (`generate.inpaint.model`), the LoRA loaded into it unmerged by
    `attach_adapter(unet)`."""
    import diffusers
    from diffusers import UNet2DConditionModel

    from kshd.drawing.control import check_family, is_sdxl
    from kshd.models.source import ModelSourceError, check_model_source

    pipeline = getattr(diffusers, f"StableDiffusion{'XL' if is_sdxl(base) else ''}InpaintPipeline")
    if not model:
        # dtype: diffusers' from_pipe casts every shared part (the base's too) to fp32 unless told
        pipe = pipeline.from_pipe(base, dtype=base.unet.dtype)
    else:
        try:
            check_model_source(model, "generate.inpaint.model", "model_index.json")
        except ModelSourceError as exc:
            raise RequestError("mask", str(exc)) from exc
        unet = UNet2DConditionModel.from_pretrained(
            model, subfolder="unet", use_safetensors=True, dtype=base.unet.dtype
        ).to(base.unet.device)
        if unet.config.in_channels != 9:
            channels = unet.config.in_channels
            raise RequestError(
                "mask", f"config key `generate.inpaint.model` = {model!r} has a {channels}-channel "
                "UNet, not an inpainting model's 9; set it to null to inpaint with the base model",
            )  # fmt: skip
        check_family(unet, base, f"config key `generate.inpaint.model` = {model!r}", "mask")
        pipe = pipeline.from_pipe(base, unet=unet, dtype=base.unet.dtype)
        if attach_adapter:
            attach_adapter(unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe
