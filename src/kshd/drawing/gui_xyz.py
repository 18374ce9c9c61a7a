"""The studio's X/Y/Z plot tab (A1111's script, `kshd.drawing.xyz`): an axis type and its
values for X, Y and Z, drawn with the prompts and settings of the Text to image tab (one image a
cell), Generate, Interrupt (the grid ends after the cell in progress, keeping what is drawn),
the cells done beside Generate, the grid with its parameters. Its endpoint is `/xyz` (the Text
to image tab's fields, then the script's), and `/xyz_interrupt`."""

from __future__ import annotations

import logging
import threading
import time
import typing

import gradio as gr

from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.gui_actions import Handlers, gradio_signature, idle_buttons, session, signed
from kshd.drawing.gui_modes import TAB_FIELDS
from kshd.drawing.gui_parts import Tab
from kshd.drawing.request import SAMPLERS, Request
from kshd.drawing.xyz import Axis, Plot, XyzResult, plot_xyz
from kshd.drawing.xyz_axes import KINDS, NOTHING, to_csv

log = logging.getLogger(__name__)
# the script's inputs after the Text to image tab's, in the order of the endpoint's parameters
XYZ_FIELDS = {"x_type": str, "x_values": str, "y_type": str, "y_values": str, "z_type": str,
              "z_values": str, "draw_legend": bool, "include_sub_grids": bool,
              "margin_size": int}  # fmt: skip
NOTE = (
    "Each cell is one image drawn with the prompts and settings of the **Text to image** tab "
    "(not its batch count and batch size), the axis's value set in it. Values as A1111 types "
    "them: `1, 3, 8`, `1-5`, `1-5 (+2)`, `0.2-1.0 [5]`; Prompt S/R: the first value is "
    "searched for and replaced by each. 📒 fills in the LoRA list or the samplers."
)  # fmt: skip


class XyzHandlers:
    """The tab's callbacks: a grid per page at a time, and its stop."""

    def __init__(self, handlers: Handlers, catalog: LoraCatalog):
        self.handlers, self.catalog = handlers, catalog
        self._stops: dict[str | None, threading.Event] = {}

    def draw(self, values: dict, progress: gr.Progress, request: gr.Request | None) -> tuple:
        base = Request(**{n: values[n] for n in TAB_FIELDS})
        axes = [Axis(values[f"{a}_type"], values[f"{a}_values"] or "") for a in "xyz"]
        plot = Plot(*axes, legend=bool(values["draw_legend"]),
                    include_sub_grids=bool(values["include_sub_grids"]),
                    margin=int(values["margin_size"] or 0))  # fmt: skip
        owner, stop = session(request), threading.Event()
        self._stops[owner] = stop

        def cells(done: int, total: int, step: int, steps: int) -> None:
            said = f"cell {min(done + 1, total)} of {total}, step {step}/{steps}"
            progress((done, total), desc=said, unit="cells")

        started = time.monotonic()
        try:
            result = plot_xyz(self.handlers.engine, base, plot, self.catalog, cells, stop,
                              self.handlers.checkpoint_strength, owner=owner)  # fmt: skip
        except Exception as exc:  # one line beside Generate, which comes back (`failed`)
            raise self.handlers.fail(exc, request) from exc
        finally:
            self._stops.pop(owner, None)
        return _shown(result, len(result.cells), time.monotonic() - started)

    def failed(self, request: gr.Request) -> tuple:
        """The drawing tabs' `failed` for this tab's two buttons: Generate back, the error
        beside it."""
        generate, interrupt, _skip, status = self.handlers.failed(request)
        return generate, interrupt, status

    def idle(self) -> tuple:
        generate, interrupt, _skip = idle_buttons()
        return generate, interrupt

    def interrupt(self, request: gr.Request) -> str:
        """End this page's grid after the cell in progress."""
        stop = self._stops.get(session(request))
        if stop is None:
            return "interrupt: nothing of yours is drawing"
        stop.set()
        return "interrupt: asked (the grid ends after the cell in progress)"


def _shown(result: XyzResult, total: int, took: float) -> tuple:
    """(gallery, the grid's parameters, its PNG and the cells', the status line)."""
    gallery = [
        (str(p), "grid" if i == 0 else f"Z grid {i}") for i, p in enumerate(result.grid_paths)
    ]
    files = [str(p) for p in [*result.grid_paths, *result.cell_paths] if p is not None]
    said = f"{result.drawn}/{total} cells in {took:.1f} s"
    return gallery, result.infotext, files, said + (" (interrupted)" if result.stopped else "")


def xyz_handler(tab: XyzHandlers):
    """`tab.draw` with an explicit signature: the Text to image fields, then the script's (Gradio
    names the endpoint's parameters from it), Gradio's progress and request."""
    hints = typing.get_type_hints(Request) | XYZ_FIELDS  # resolved, as the drawing tabs' are
    signature = gradio_signature([(n, hints[n]) for n in (*TAB_FIELDS, *XYZ_FIELDS)])

    def handler(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return tab.draw(values, values.pop("progress"), values.pop("request"))

    return signed(handler, signature)


def _fill(catalog: LoraCatalog):
    def fill(kind: str, typed: str) -> str:
        """📒: every entry of the LoRA list, or every sampler; other axes keep what is typed."""
        if kind == "LoRA":
            return to_csv([label for label, _ in catalog.choices()])
        if kind == "Sampler":
            return to_csv([label for label, _, _ in SAMPLERS.values()])
        return typed

    return fill


def _axes() -> dict[str, tuple]:
    """Each axis's type, values and 📒, in a row (X: Seed, the others Nothing, as A1111)."""
    out = {}
    for axis, start in (("x", "Seed"), ("y", NOTHING), ("z", NOTHING)):
        with gr.Row(equal_height=True):
            kind = gr.Dropdown(list(KINDS), value=start, label=f"{axis.upper()} type", scale=2,
                               elem_id=f"xyz-{axis}-type")  # fmt: skip
            values = gr.Textbox("", label=f"{axis.upper()} values", scale=5,
                                elem_id=f"xyz-{axis}-values")  # fmt: skip
            fill = gr.Button("📒", size="sm", scale=0, min_width=44, elem_id=f"xyz-{axis}-fill")
        out[axis] = (kind, values, fill)
    return out


def build_xyz(handlers: Handlers, catalog: LoraCatalog, txt2img: Tab) -> None:
    """The tab (inside a gr.Tab), its inputs the Text to image tab's `txt2img` and its own."""
    private = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    tab = XyzHandlers(handlers, catalog)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            gr.Markdown(NOTE, elem_classes=["effective"])
            axes = _axes()
            with gr.Row():
                legend = gr.Checkbox(True, label="Draw legend", elem_id="xyz-legend")
                subs = gr.Checkbox(False, label="Include Sub Grids", elem_id="xyz-sub-grids")
                margin = gr.Slider(0, 500, 0, step=2, label="Grid margins (px)",
                                   elem_id="xyz-margin")  # fmt: skip
            with gr.Row():
                swaps = {
                    p: gr.Button(f"Swap {p[0].upper()}/{p[1].upper()} axes", size="sm",
                                 elem_id=f"xyz-swap-{p}") for p in ("xy", "yz", "xz")
                }  # fmt: skip
        with gr.Column(scale=1, min_width=200):
            generate = gr.Button("Generate", variant="primary", size="lg", elem_id="xyz-generate")
            interrupt = gr.Button("Interrupt", interactive=False, elem_id="xyz-interrupt")
            status = gr.Markdown("", elem_id="xyz-status", elem_classes=["status"])
    gallery = gr.Gallery(label="Grid", elem_id="xyz-gallery", columns=1, height=420,
                         object_fit="contain", preview=False, interactive=False)  # fmt: skip
    info = gr.Textbox(label="Generation parameters", lines=3, elem_id="xyz-info")
    with gr.Accordion("PNG files (the grid and its cells, with parameters)", open=False):
        files = gr.File(label="PNG files", file_count="multiple", elem_id="xyz-files")
    own = [c for axis in axes.values() for c in axis[:2]] + [legend, subs, margin]
    job = generate.click(lambda: (gr.Button(interactive=False, value="Generating…"),
                                  gr.Button(interactive=True)), None, [generate, interrupt],
                         **private)  # fmt: skip
    job = job.then(xyz_handler(tab), [*txt2img.fields.inputs(TAB_FIELDS), *own],
                   [gallery, info, files, status], api_name="xyz",
                   show_progress_on=[status, gallery], concurrency_id="engine")  # fmt: skip
    # Gradio's page runs no `.then` after an error: each outcome brings Generate back itself
    job.success(tab.idle, None, [generate, interrupt], **private)
    job.failure(tab.failed, None, [generate, interrupt, status], **private)
    interrupt.click(tab.interrupt, None, status, queue=False, api_name="xyz_interrupt")
    for kind, values, fill in axes.values():
        fill.click(_fill(catalog), [kind, values], values, **private)
    for pair, button in swaps.items():
        (k1, v1, _), (k2, v2, _) = axes[pair[0]], axes[pair[1]]
        button.click(lambda a, b, c, d: (c, d, a, b), [k1, v1, k2, v2], [k1, v1, k2, v2],
                     **private)  # fmt: skip
