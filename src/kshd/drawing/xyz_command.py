"""`kshd xyz`: A1111's X/Y/Z plot from the shell (`kshd.drawing.xyz`), the other settings the
`kshd generate` flags' (unset: `generate.*`), the LoRA axis's entries those of the studio's
LoRA chooser (the trained LoRA, the training's checkpoints, `generate.gui.lora_dirs`)."""

from __future__ import annotations

import argparse
import logging

from tqdm import tqdm

from kshd.drawing.commands import (
    _drawing_options,
    base_model_missing,
    load_config,
    prepare_models,
    request_changes,
)
from kshd.drawing.request import RequestError
from kshd.drawing.xyz_axes import KINDS, NOTHING

log = logging.getLogger(__name__)


def add_xyz_command(sub) -> None:
    p = sub.add_parser("xyz", help="A1111's X/Y/Z plot: a grid over two or three settings")
    _drawing_options(p)
    for axis in "xyz":
        p.add_argument(f"--{axis}-type", choices=list(KINDS), required=axis == "x",
                       default=None if axis == "x" else NOTHING)  # fmt: skip
        p.add_argument(f"--{axis}-values", default="", help='e.g. "1-5 (+2)", "checkpoint 40, 80"')
    p.add_argument("--no-legend", action="store_true", help="no axis values beside the grid")
    p.add_argument("--sub-grids", action="store_true", help="also save each Z value's grid")
    p.add_argument("--margin", type=int, default=0, help="pixels between the cells")
    p.set_defaults(func=xyz)


def xyz(args: argparse.Namespace) -> int:
    from kshd.drawing.catalog import LoraCatalog
    from kshd.drawing.engine import Engine, EngineSettings
    from kshd.drawing.request import Request
    from kshd.drawing.xyz import Axis, Plot, plot_xyz

    cfg = load_config(args.overrides, "xyz")
    if cfg is None:
        return 2
    prepare_models(args, cfg)
    if base_model_missing(cfg.model, "xyz"):
        return 2
    g = cfg.generate
    base = Request.from_settings(g, args.prompt, **request_changes(args))
    axes = [Axis(getattr(args, f"{a}_type"), getattr(args, f"{a}_values")) for a in "xyz"]
    plot = Plot(*axes, legend=not args.no_legend, include_sub_grids=args.sub_grids,
                margin=args.margin)  # fmt: skip
    catalog = LoraCatalog(g.lora, g.gui.checkpoints_dir, g.gui.eval_metrics, tuple(g.gui.lora_dirs))
    try:
        engine = Engine(EngineSettings.from_settings(cfg.model, g, args.lora))
        with tqdm(total=1, unit="cell", desc="xyz") as bar:

            def progress(done: int, total: int, step: int, steps: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = plot_xyz(engine, base, plot, catalog, progress,
                              checkpoint_strength=cfg.train.alpha / cfg.train.rank,
                              folder=args.out)  # fmt: skip
    except (RequestError, FileNotFoundError) as exc:
        log.error("kshd xyz: %s", exc)
        return 2
    for path in result.grid_paths:
        log.info("%s  the grid (%d of %d cells)", path, result.drawn, len(result.cells))
    return 0
