"""Sketch to style, the project's final goal, measured: each held-out drawing's line art is
redrawn through the ControlNet by the base model and by the LoRA. How much of the structure is
kept is the overlap of the result's line art with the input's (`line_overlap`, an F1 with a
2-pixel tolerance); how much of the style is applied is the result's style similarity to the
*other* held-out drawings (its own would reward copying it back)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kshd.adapters.weights import open_weights
from kshd.config.schema_evaluate import SketchEvalSettings as SketchEval
from kshd.data.images import fit_within
from kshd.drawing.control import controlnet_pipelines, controlnet_variant, is_sdxl, load_controlnet
from kshd.drawing.control_images import control_image
from kshd.evaluation.sampling import SampleSettings, grid, scaled_pair, use_sampler
from kshd.prompts.encoding import join_prefix

log = logging.getLogger(__name__)
LINE = 64  # a line-art pixel at least this bright is a line (lineart_standard draws ~127)
TOLERANCE = 2  # pixels a line may move and still count as kept


@dataclass
class SketchRows:
    """Per drawing: the input's line art, the base's and the LoRA's redrawings, the drawing."""

    lines: list[Image.Image]
    base: list[Image.Image]
    lora: list[Image.Image]
    originals: list[Image.Image]


def _lines(img: Image.Image) -> np.ndarray:
    return np.asarray(control_image(img, "lineart_standard").convert("L")) >= LINE


def line_overlap(result: Image.Image, lines: Image.Image) -> float:
    """F1 of the result's line art against the input's, each pixel allowed `TOLERANCE` px of
    shift: 1 when every line is kept and none added, 0 when none is."""
    import cv2

    drawn = _lines(result)
    wanted = np.asarray(lines.convert("L")) >= LINE
    if not wanted.any() or not drawn.any():
        return 0.0
    kernel = np.ones((2 * TOLERANCE + 1, 2 * TOLERANCE + 1), np.uint8)
    near_wanted = cv2.dilate(wanted.astype(np.uint8), kernel).astype(bool)
    near_drawn = cv2.dilate(drawn.astype(np.uint8), kernel).astype(bool)
    precision = (drawn & near_wanted).sum() / drawn.sum()
    recall = (wanted & near_drawn).sum() / wanted.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def redraw_sketches(
    pipe, sk: SketchEval, s: SampleSettings, drawings: Sequence[Image.Image], encoder, adapter
) -> SketchRows:
    """The held-out drawings' line art redrawn with the ControlNet, the LoRA off then on (an
    adapter of kind `adapter` is loaded in `pipe`; the headline strength of `s.lora_scales`)."""
    from kshd.prompts.sdxl import pipe_embeds, prompt_encoder

    encoder = encoder or prompt_encoder(pipe)
    dtype = pipe.unet.dtype
    net = load_controlnet(sk.controlnet, dtype, controlnet_variant(sk.controlnet, dtype))
    net = net.to(pipe.device)
    cpipe = controlnet_pipelines(pipe)[0].from_pipe(pipe, controlnet=net, dtype=dtype)
    cpipe.set_progress_bar_config(disable=True)
    use_sampler(cpipe, s.sampler)
    prompt = join_prefix(s.positive_prefix, sk.prompt)
    side = s.resolution
    originals = [fit_within(d.convert("RGB"), side, side) for d in drawings[: sk.drawings]]
    lines = [control_image(d, sk.preprocessor) for d in originals]
    rows = SketchRows(lines, [], [], originals)
    for target, scale in ((rows.base, None), (rows.lora, s.lora_scales[-1])):
        if scale is None:
            adapter.enable(pipe, False)
        pos, neg = scaled_pair(pipe, encoder, prompt, s, scale)
        kwargs = {} if scale is None else {"cross_attention_kwargs": {"scale": scale}}
        for control in lines:
            target += cpipe(
                **pipe_embeds(pos, neg, 1), image=control,
                num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                controlnet_conditioning_scale=sk.weight, height=side, width=side,
                generator=torch.Generator("cpu").manual_seed(s.seeds[0]), **kwargs,
            ).images  # fmt: skip
        if scale is None:
            adapter.enable(pipe, True)
    return rows


def sketch_metrics(rows: SketchRows, embed) -> dict:
    """Structure kept and style applied, base and LoRA; `embed`: images -> embeddings (the
    evaluation's CLIP), or None for the structure alone."""
    from kshd.evaluation.metrics import cosine_matrix

    out = {"sketch_drawings": len(rows.lines)}
    for name, drawn in (("", rows.lora), ("_base", rows.base)):
        kept = [line_overlap(r, lines) for r, lines in zip(drawn, rows.lines, strict=True)]
        out[f"sketch_structure{name}"] = round(float(np.mean(kept)), 6)
    if embed is not None and len(rows.originals) > 1:
        refs = embed(rows.originals)
        for name, drawn in (("", rows.lora), ("_base", rows.base)):
            sims = cosine_matrix(embed(drawn), refs)
            others = ~torch.eye(len(drawn), dtype=torch.bool)
            out[f"sketch_style{name}"] = round(float(sims[others].mean()), 6)
        out["sketch_style_gain"] = round(out["sketch_style"] - out["sketch_style_base"], 6)
    return out


def save_sketch_grids(rows: SketchRows, out_dir: Path) -> list[Path]:
    """One image per drawing: its line art | base | LoRA | the drawing itself."""

    folder = out_dir / "sketch"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    items = zip(rows.lines, rows.base, rows.lora, rows.originals, strict=True)
    for i, row in enumerate(items):
        paths.append(folder / f"sketch-{i:02d}.png")
        grid([list(row)]).save(paths[-1])
    return paths


def _family_of(controlnet: str) -> str:
    """A ControlNet's family, from its config alone (SDXL's conditions on pooled text)."""
    from diffusers import ControlNetModel

    config = ControlNetModel.load_config(controlnet)
    return "sdxl" if config.get("addition_embed_type") == "text_time" else "sd1"


def sketch_section(pipe, lora_dir: Path, sk: SketchEval, s: SampleSettings, drawings, encoder,
                   embed, out_dir: Path) -> dict:  # fmt: skip
    """The section's metrics (and its grids under `out_dir/sketch/`), {} when not asked for:
    with the final LoRA in `lora_dir`, loaded afresh (the checkpoint curve swapped others in)."""
    if sk is None or not sk.controlnet or not len(drawings):
        return {}
    if (family := _family_of(sk.controlnet)) != (base := "sdxl" if is_sdxl(pipe) else "sd1"):
        log.warning("evaluate.sketch: skipped, evaluate.sketch.controlnet = %s is a %s ControlNet "
                    "and the base is %s; name one of the base's family (+experiment=sdxl does) "
                    "or set it to null", sk.controlnet, family, base)  # fmt: skip
        return {}
    weights = open_weights(lora_dir)
    weights.adapter.detach(pipe)  # the last checkpoint the curve drew, of the same kind
    weights.attach(pipe)
    rows = redraw_sketches(pipe, sk, s, drawings, encoder, weights.adapter)
    save_sketch_grids(rows, out_dir)
    metrics = sketch_metrics(rows, embed)
    log.info("sketch to style: %s", metrics)
    return metrics
