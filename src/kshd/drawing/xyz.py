"""AUTOMATIC1111's X/Y/Z plot: a grid of drawings over two or three axes (seed, steps, CFG,
sampler, prompt S/R, LoRA or training checkpoint, LoRA strength), the other settings a base
request's (the Text to image tab's, as A1111's script takes its tab's).

Each cell is one image drawn by the engine as any job is (`Engine.generate`, saved with its own
parameters where the Text to image tab saves), so a cell equals the image drawn alone with its
settings. The cells are drawn in A1111's order, the costliest axis outermost: on a LoRA axis
each LoRA is loaded once, and the LoRA in use comes back after the grid. A stop asked between
cells ends the grid after the cell in progress, keeping what is drawn. The grid, with its axis
values written beside it, is saved as a PNG under `<outputs>/txt2img-grids/<date>/` with the
first cell's parameters plus the script's keys as A1111 writes them ("Script: X/Y/Z plot,
X Type: Seed, X Values: ...").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from PIL import Image

from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.engine import Engine
from kshd.drawing.modes.registry import validate
from kshd.drawing.pnginfo import format_parameters, save_png
from kshd.drawing.request import Request, RequestError, first_seed
from kshd.drawing.xyz_axes import NOTHING, AxisError, AxisValues, cell_order, prepare_axis
from kshd.drawing.xyz_grid import sub_grid, z_grid

log = logging.getLogger(__name__)
SCRIPT = "X/Y/Z plot"
GRIDS = "txt2img-grids"  # A1111's folder of grids, beside the Text to image tab's images
# (cells done, cells in the grid, steps done in the cell, steps in the cell)
GridProgress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class Axis:
    """One axis as the script's fields take it: its type and its values as typed."""

    kind: str = NOTHING
    values: str = ""


@dataclass(frozen=True)
class Plot:
    """The script's settings: the axes, the labels ("Draw legend"), whether each Z value's grid
    is saved as well ("Include Sub Grids"), and pixels between the cells ("Grid margins")."""

    x: Axis
    y: Axis = Axis()
    z: Axis = Axis()
    legend: bool = True
    include_sub_grids: bool = False
    margin: int = 0


@dataclass
class Cell:
    at: tuple[int, int, int]  # (ix, iy, iz)
    request: Request
    lora: str | None  # the LoRA it is drawn with (the LoRA axis's), or None


@dataclass
class XyzResult:
    grid: Image.Image
    infotext: str  # the grid's parameters
    grid_paths: list[Path]  # the grid's PNG, then each Z value's when asked for
    sub_grids: list[Image.Image]  # one per Z value
    cells: list[Image.Image | None]  # index ix + iy * len(xs) + iz * len(xs) * len(ys)
    cell_paths: list[Path | None]
    infotexts: list[str | None]  # each cell's parameters, indexed as `cells`
    drawn: int
    stopped: bool = False  # the grid was stopped before its last cell
    loads: list[str | None] = field(default_factory=list)  # LoRAs loaded, in order


@dataclass
class Planned:
    base: Request  # checked: its size as whole numbers
    axes: tuple[AxisValues, AxisValues, AxisValues]
    cells: list[Cell]  # in the order drawn

    def index(self, at: tuple[int, int, int]) -> int:
        nx, ny = len(self.axes[0].values), len(self.axes[1].values)
        return at[0] + at[1] * nx + at[2] * nx * ny


def plan(base: Request, plot: Plot, catalog: LoraCatalog, limits, lora: str | None) -> Planned:
    """Every cell's request, each checked as the engine will check it, before anything is
    drawn. `lora`: the LoRA in use (kept where no axis is the LoRA)."""
    base = validate(replace(base), limits)  # its own fields named as the tab names them
    axes = tuple(
        prepare_axis(name, a.kind, a.values, base, catalog)
        for name, a in (("X", plot.x), ("Y", plot.y), ("Z", plot.z))
    )
    kinds = [a.kind.label for a in axes if a.kind.label != NOTHING]
    if dup := {k for k in kinds if kinds.count(k) > 1}:
        raise AxisError("X/Y/Z types", f"{', '.join(dup)} on two axes")
    seed = first_seed(base.seed)  # one seed for every cell unless an axis is the seed
    count = 1
    for a in axes:
        count *= len(a.values)
    pixels = count * base.width * base.height
    if count > limits.max_batch_count * limits.max_batch_size or pixels > limits.max_upload_pixels:
        raise AxisError("X/Y/Z values", f"{count} cells of {base.width}x{base.height} is more than "
                        f"a grid may hold ({limits.max_batch_count * limits.max_batch_size} "
                        f"cells, {limits.max_upload_pixels} pixels)")  # fmt: skip
    cells = []
    for at in cell_order(axes):
        req = replace(base, seed=seed, batch_count=1, batch_size=1)
        cell_lora = lora
        for a, i in zip(axes, at, strict=True):
            a.kind.apply(req, a.values[i], a.values)
            if a.kind.label == "LoRA":
                cell_lora = a.values[i]
        try:
            validate(replace(req), limits)
        except RequestError as exc:
            raise AxisError("X/Y/Z values", f"cell {at}: {exc}") from None
        cells.append(Cell(at, req, cell_lora))
    return Planned(base, axes, cells)


def script_params(axes: tuple[AxisValues, ...], with_z: bool) -> dict[str, str]:
    """The keys A1111's script adds to a grid's parameters (Z's on the main grid only)."""
    out = {"Script": SCRIPT}
    for name, a in zip("XYZ", axes, strict=True):
        if a.kind.label == NOTHING or (name == "Z" and not with_z):
            continue
        out |= {f"{name} Type": a.kind.label, f"{name} Values": a.typed}
        if a.fixed is not None:
            out[f"Fixed {name} Values"] = a.fixed
    return out


def with_params(infotext: str, params: dict[str, str]) -> str:
    """`infotext` with `params` added to its last line, quoted as A1111 quotes them."""
    return f"{infotext}, {format_parameters('', '', params).splitlines()[-1]}"


def _draw_cells(
    engine: Engine, planned: Planned, checkpoint_strength: float | None,
    progress: GridProgress, stop: threading.Event, save: bool, owner: str | None,
    folder: str | Path | None = None,
) -> tuple[list, list, list, list]:  # fmt: skip
    """(images, paths, infotexts, LoRAs loaded); cells not drawn stay None."""
    n = len(planned.cells)
    images, paths, texts = [None] * n, [None] * n, [None] * n
    loads: list[str | None] = []
    for done, cell in enumerate(planned.cells):
        if stop.is_set():
            log.info("%s stopped after %d of %d cells", SCRIPT, done, n)
            break
        if cell.lora != engine.lora_path:
            engine.set_lora(cell.lora, checkpoint_strength)
            loads.append(cell.lora)

        def steps(d: int, t: int, done=done) -> None:
            progress(done, n, d, t)

        out = engine.generate(cell.request, steps, save=save, folder=folder, owner=owner)
        i = planned.index(cell.at)
        if out.images:
            images[i], texts[i] = out.images[0], out.infotexts[0]
            paths[i] = out.paths[0] if out.paths else None
        progress(done + 1, n, cell.request.steps, cell.request.steps)
    return images, paths, texts, loads


def plot_xyz(
    engine: Engine, base: Request, plot: Plot, catalog: LoraCatalog | None = None,
    progress: GridProgress | None = None, stop: threading.Event | None = None,
    checkpoint_strength: float | None = None, save: bool = True, owner: str | None = None,
    folder: str | Path | None = None,
) -> XyzResult:  # fmt: skip
    """Draw the grid (see the module's docstring); `catalog`: the LoRAs a LoRA axis may name
    (the studio's chooser); `stop`: set to end the grid after the cell in progress;
    `checkpoint_strength`: for training checkpoints that record no adapter (alpha / rank);
    `folder`: where the cells and the grid go (by default the Text to image tab's and
    `<outputs>/txt2img-grids/<date>/`)."""
    catalog = catalog or LoraCatalog(engine.lora_path, None, None)
    in_use = engine.lora_path
    planned = plan(base, plot, catalog, engine.limits, in_use)
    stop = stop or threading.Event()
    try:
        images, paths, texts, loads = _draw_cells(
            engine,
            planned,
            checkpoint_strength,
            progress or (lambda *a: None),
            stop,
            save,
            owner,
            folder,
        )
    finally:
        if engine.lora_path != in_use:
            engine.set_lora(in_use, checkpoint_strength)  # the LoRA the model bar shows
    drawn = sum(i is not None for i in images)
    if not drawn:
        raise RequestError("X/Y/Z plot", "stopped before its first cell was drawn")
    result = _grids(planned, images, texts, plot)
    if save:
        result.grid_paths = _save(engine, result, planned, plot, folder)
    result.cell_paths, result.drawn, result.loads = paths, drawn, loads
    result.stopped = drawn < len(planned.cells)
    return result


def _grids(planned: Planned, images: list, texts: list, plot: Plot) -> XyzResult:
    xs, ys, zs = planned.axes
    size = (planned.base.width, planned.base.height)
    per_z = len(xs.values) * len(ys.values)
    subs = [
        sub_grid(
            images[z * per_z : (z + 1) * per_z],
            size,
            (xs.labels, ys.labels),
            plot.legend,
            plot.margin,
        )  # fmt: skip
        for z in range(len(zs.values))
    ]
    grid = subs[0] if len(subs) == 1 else z_grid(subs, zs.labels, plot.legend)
    info = with_params(_first(texts), script_params(planned.axes, with_z=True))
    return XyzResult(grid, info, [], subs, images, [], texts, 0)


def _first(texts: list[str | None]) -> str:
    """The parameters of the first cell drawn (the top left one, as A1111's grid takes)."""
    return next(t for t in texts if t is not None)


def _save(
    engine: Engine, result: XyzResult, planned: Planned, plot: Plot, folder: str | Path | None
) -> list[Path]:
    """The grid; with `include_sub_grids`, each Z value's grid too, with the X and Y keys."""
    folder = folder or Path(engine.settings.outputs_dir) / GRIDS / date.today().isoformat()
    seed = planned.cells[0].request.seed
    paths = [save_png(result.grid, result.infotext, folder, seed)]
    if plot.include_sub_grids and len(result.sub_grids) > 1:
        per_z = len(planned.axes[0].values) * len(planned.axes[1].values)
        params = script_params(planned.axes, with_z=False)
        for z, grid in enumerate(result.sub_grids):
            texts = result.infotexts[z * per_z : (z + 1) * per_z]
            if any(texts):
                paths.append(save_png(grid, with_params(_first(texts), params), folder, seed))
    for path in paths:
        log.info("%s: %s", SCRIPT, path)
    return paths
