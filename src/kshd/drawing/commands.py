"""`kshd generate`, `kshd img2img` and `kshd gui`: the drawing app from the shell."""

from __future__ import annotations

import argparse
import logging
import os

from tqdm import tqdm

from kshd.config.errors import UserError
from kshd.config.schema import ProjectConfig
from kshd.config.schema_model import ModelSettings
from kshd.config.values import CONTROL_MODES, INPAINT_AREAS, PREPROCESSORS
from kshd.drawing.request import SAMPLERS, RequestError

log = logging.getLogger(__name__)


def _drawing_options(p: argparse.ArgumentParser) -> None:
    """The GUI's fields as flags; an unset flag takes its value from `generate.*`."""
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", dest="negative_prompt", help="added after the negative prefix")
    p.add_argument("--positive-prefix", help='default generate.positive_prefix; "" for none')
    p.add_argument("--negative-prefix", help='default generate.negative_prefix; "" for none')
    p.add_argument("--sampler", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", dest="cfg_scale", type=float, help="CFG scale")
    p.add_argument("--seed", type=int, help="-1 = random (the seed used is printed)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--batch-count", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lora", help="a LoRA folder or .safetensors file (default generate.lora)")
    p.add_argument("--lora-scale", type=float, help="LoRA strength; 0 = the base model")
    p.add_argument(
        "--clip-skip", type=int, help="A1111's Clip skip, 1 or 2 (default model.clip_skip)"
    )
    p.add_argument("--out", help="PNG folder (default <generate.outputs_dir>/<kind>/<date>)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. +experiment=demo")


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="text-to-image with the LoRA")
    _drawing_options(p)
    p.set_defaults(func=draw)
    p = sub.add_parser("img2img", help="redraw a picture in KSH style")
    _drawing_options(p)
    p.add_argument("--image", required=True, help="the picture to redraw (any image format)")
    _picture_options(p)
    p.set_defaults(func=draw)
    _sketch_command(sub)
    _inpaint_command(sub)
    p = sub.add_parser("gui", help="the web GUI (Gradio) on 127.0.0.1")
    p.add_argument("--host", help="default generate.gui.host (127.0.0.1)")
    p.add_argument("--port", type=int, help="default generate.gui.port (7860)")
    p.add_argument("--lora", help="a LoRA folder or .safetensors file (default generate.lora)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. +experiment=demo")
    p.set_defaults(func=gui)


def _picture_options(p: argparse.ArgumentParser, what: str = "") -> None:
    """How a picture is redrawn: its denoising strength and how it is fitted to the size."""
    p.add_argument("--strength", type=float, help=f"denoising strength{what} in [0, 1]")
    p.add_argument("--resize-mode", choices=["crop", "fill", "stretch"])


def _sketch_command(sub) -> None:
    """`kshd sketch`: a sketch's lines kept by a ControlNet, drawn in the LoRA's style; with
    --init, a picture redrawn as well (image-to-image with the control)."""
    p = sub.add_parser("sketch", help="redraw a sketch in KSH style (ControlNet)")
    _drawing_options(p)
    p.add_argument("--image", dest="control_image", required=True, help="the sketch")
    p.add_argument(
        "--control",
        dest="control_type",
        help="a key of generate.control.models (default generate.control.type)",
    )
    p.add_argument(
        "--preprocessor",
        choices=PREPROCESSORS,
        help="how its lines are found (default generate.control.preprocessor)",
    )
    p.add_argument("--control-weight", type=float)
    p.add_argument("--guidance-start", type=float, help="from this part of the steps, 0..1")
    p.add_argument("--guidance-end", type=float, help="until this part of the steps, 0..1")
    p.add_argument("--control-mode", choices=CONTROL_MODES)
    p.add_argument("--init", dest="image", help="a picture to redraw, guided by the sketch")
    _picture_options(p, " of --init")
    p.add_argument("--control-out", help="also write the control image (the lines used) here")
    p.set_defaults(func=draw)  # fmt: skip


def _inpaint_command(sub) -> None:
    """`kshd inpaint`: redraw the masked part of a picture (white in the mask), keep the rest."""
    p = sub.add_parser("inpaint", help="redraw the masked part of a picture in KSH style")
    _drawing_options(p)
    p.add_argument("--image", required=True, help="the picture")
    p.add_argument(
        "--mask",
        required=True,
        help="white = redraw (or the opaque strokes of a transparent image)",
    )
    p.add_argument("--mask-blur", type=int, help="feather in pixels (default generate.inpaint)")
    p.add_argument(
        "--inpaint-area",
        choices=INPAINT_AREAS,
        help="only_masked: the mask's region drawn at the full size",
    )
    p.add_argument("--inpaint-padding", type=int, help="only_masked: pixels of context")
    _picture_options(p)
    p.set_defaults(func=draw)


def request_changes(args: argparse.Namespace) -> dict:
    """The Request fields the flags set (a flag's dest is the field's name); None = unset."""
    from dataclasses import fields

    from kshd.drawing.request import Request

    return {f.name: getattr(args, f.name, None) for f in fields(Request) if f.name != "prompt"}


def base_model_missing(m: ModelSettings, command: str) -> bool:
    """Say in one line (and return True) when the base model cannot be had: before any work."""
    from kshd.models.source import ModelSourceError, check_model_source

    try:
        check_model_source(m.pretrained, "model.pretrained", "model_index.json", m.revision)
    except ModelSourceError as exc:
        log.error("kshd %s: %s", command, exc)
        return True
    return False


def prepare_models(args: argparse.Namespace, cfg: ProjectConfig) -> None:
    """What the `kshd` command does before drawing (`args.prepare_models`: the demo profile's
    tiny models built), so that this module never imports the demo world."""
    prepare = getattr(args, "prepare_models", None)
    if prepare is not None:
        prepare(cfg)


def load_config(overrides: list[str], command: str) -> ProjectConfig | None:
    """The composed config, or None after saying in one line which key is wrong."""
    from kshd.config.compose import load_params

    try:
        return load_params(overrides)
    except (UserError, FileNotFoundError) as exc:
        log.error("kshd %s: %s", command, exc)
        return None


def draw(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kshd.drawing.engine import Engine, EngineSettings
    from kshd.drawing.modes.registry import mode_of
    from kshd.drawing.modes.sketch import control_preview
    from kshd.drawing.request import Request

    cfg = load_config(args.overrides, args.command)
    if cfg is None:
        return 2
    prepare_models(args, cfg)
    if base_model_missing(cfg.model, args.command):
        return 2
    req = Request.from_settings(cfg.generate, args.prompt, **request_changes(args))
    try:
        settings = EngineSettings.from_settings(cfg.model, cfg.generate, args.lora)
        strength = cfg.train.alpha / cfg.train.rank  # a <lora:checkpoint-N> recording none
        engine = Engine(replace(settings, checkpoint_strength=strength))
        with tqdm(total=1, unit="step", desc=mode_of(req).name) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = engine.generate(req, progress, folder=args.out)
        if getattr(args, "control_out", None):
            control_preview(req, engine.limits).save(args.control_out)
            log.info("%s  the control image", args.control_out)
    except (RequestError, UserError, FileNotFoundError) as exc:  # e.g. a LoRA of another base
        log.error("kshd %s: %s", args.command, exc)
        return 2
    for path, seed in zip(result.paths, result.seeds, strict=True):
        log.info("%s  seed %d", path, seed)
    return 0


def gui(args: argparse.Namespace) -> int:
    from kshd.drawing.gui import launch

    cfg = load_config(args.overrides, "gui")
    if cfg is None:
        return 2
    prepare_models(args, cfg)
    if base_model_missing(cfg.model, "gui"):
        return 2
    auth = os.environ.get("KSHD_GUI_AUTH")
    try:
        return launch(cfg, host=args.host, port=args.port, lora=args.lora, auth=auth)
    except UserError as exc:  # e.g. generate.lora made for another base
        log.error("kshd gui: %s", exc)
        return 2
