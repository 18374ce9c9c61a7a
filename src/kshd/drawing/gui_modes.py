"""Each drawing mode's part of the studio: its tab's title, the Request fields of its inputs in
order, its own inputs (built at the top of the settings column) and their events, the tabs its
images are sent to, and what stands in for its pictures when one of its fields is checked alone.

A new mode's tab is its mode file (`kshd.drawing.modes`) plus a `TabPart` given to
`register_tab` (from a file of its own): the studio builds it as a tab after the built-in ones,
its handler and its endpoint (`/<mode name>`, for gradio_client) included, and draws what it
sends with the engine unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from PIL import Image

from kshd.config.values import CONTROL_MODE_LABELS, PREPROCESSORS
from kshd.drawing.gui_components import FieldSlider, MaskedPicture, PicturePath, SketchPath
from kshd.drawing.modes.base import Mode
from kshd.drawing.modes.img2img import ImageToImage
from kshd.drawing.modes.inpaint import Inpaint
from kshd.drawing.modes.sketch import MAX_CONTROL_WEIGHT, Sketch, control_preview
from kshd.drawing.modes.txt2img import TextToImage
from kshd.drawing.request import Request, RequestError

log = logging.getLogger(__name__)

# The Request fields each tab's inputs fill, in the order Gradio passes them to the handlers and
# names them in the API (`/txt2img`, `/img2img`, for gradio_client): written once, here; a
# tab's components and its handler's signature follow them.
TAB_FIELDS = (
    "prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "seed", "width", "height",
    "batch_count", "batch_size", "lora_scale", "positive_prefix", "negative_prefix", "clip_skip",
)  # fmt: skip
PICTURE_FIELDS = ("image", "strength", "resize_mode")
IMG2IMG_FIELDS = (*PICTURE_FIELDS, *TAB_FIELDS)
CONTROL_FIELDS = ("control_image", "control_type", "preprocessor", "control_weight",
                  "guidance_start", "guidance_end", "control_mode")  # fmt: skip
SKETCH_FIELDS = (*CONTROL_FIELDS, "resize_mode", *TAB_FIELDS)
# inpainting: "image" is the picture with its mask brushed on it (MaskedPicture)
MASK_FIELDS = ("mask_blur", "inpaint_area", "inpaint_padding")
INPAINT_FIELDS = ("image", *MASK_FIELDS, "strength", "resize_mode", *TAB_FIELDS)

Component = gr.components.Component
# a tab's own inputs by Request field, and an image shown beside them (the sketch's lines)
OwnInputs = tuple[dict[str, Component], gr.Image | None]


@dataclass(frozen=True)
class TabPart:
    """One mode's part of its tab (see the module's docstring)."""

    mode: type[Mode]  # its name: the tab's id, its endpoint and its components' id prefix
    label: str  # the tab's title
    fields: tuple[str, ...]  # the Request fields of the tab's inputs, in order (the API's)
    # its own inputs, built in the settings column: (tab, defaults, the ControlNets' types)
    build: Callable[[str, Request, list[str]], OwnInputs] | None = None
    sends: tuple[str, ...] = ("img2img",)  # the tabs its images can be sent to ("loopback")
    # values that make a request its mode's when one of its own fields is checked alone
    stand_ins: dict[str, object] = field(default_factory=dict)
    # its own events, given the built tab (`gui_parts.Tab`) and the engine in use's getter
    wire: Callable[[Any, Callable[[], Any]], None] | None = None

    @property
    def name(self) -> str:
        return self.mode.name


_TABS: dict[str, TabPart] = {}


def register_tab(part: TabPart) -> TabPart:
    """Adds a mode's tab to the studio (built after the tabs registered before it)."""
    if part.name in _TABS:
        raise ValueError(f"the studio has a tab for {part.name!r} already")
    if set(part.fields) & {"progress", "request"}:
        raise ValueError(f"{part.name}: `progress` and `request` are the handlers' own")
    _TABS[part.name] = part
    return part


def tab_parts() -> dict[str, TabPart]:
    """The registered tabs by mode name, in the order registered."""
    return dict(_TABS)


def _picture(tab: str, d: Request, image=None) -> dict[str, Component]:
    """The picture (`image`, or an upload box), the denoising strength and the resize mode."""
    image = image or PicturePath(
        type="filepath", label="Picture", elem_id=f"{tab}-image", height=240
    )
    strength = FieldSlider(0, 1, d.strength, step=0.01, label="Denoising strength",
                      elem_id=f"{tab}-strength")  # fmt: skip
    resize = gr.Radio(["crop", "fill", "stretch"], value=d.resize_mode, label="Resize mode",
                      elem_id=f"{tab}-resize")  # fmt: skip
    return {"image": image, "strength": strength, "resize_mode": resize}


def picture_inputs(tab: str, d: Request, control_types: list[str]) -> OwnInputs:
    """Image to image's: the picture to redraw, its strength and how it is fitted."""
    return _picture(tab, d), None


def inpaint_inputs(tab: str, d: Request, control_types: list[str]) -> OwnInputs:
    """The picture with the part to redraw brushed on it, and A1111's inpainting settings."""
    gr.Markdown("Upload a picture, pick the brush and paint over the part to redraw.",
                elem_classes=["effective"])  # fmt: skip
    brushed = MaskedPicture(
        label="Picture", type="pil", elem_id=f"{tab}-image",
        height=300, sources=["upload", "clipboard"], transforms=(), layers=False,
        brush=gr.Brush(colors=["#ff2a6d"], default_color="#ff2a6d", default_size=24),
    )  # fmt: skip
    picture = _picture(tab, d, brushed)
    with gr.Row():
        picture["mask_blur"] = FieldSlider(0, 64, d.mask_blur, step=1, label="Mask blur",
                                      elem_id=f"{tab}-mask-blur")  # fmt: skip
        picture["inpaint_padding"] = FieldSlider(0, 256, d.inpaint_padding, step=4,
                                            label="Only masked padding, pixels",
                                            elem_id=f"{tab}-padding")  # fmt: skip
    picture["inpaint_area"] = gr.Radio(
        [("Whole picture", "whole"), ("Only masked", "only_masked")], value=d.inpaint_area,
        label="Inpaint area", elem_id=f"{tab}-area",
    )  # fmt: skip
    return picture, None


def control_inputs(tab: str, d: Request, types: list[str]) -> OwnInputs:
    """The sketch (uploaded or drawn), the lines the ControlNet will follow, and the unit's
    settings as A1111's ControlNet extension names them (its resize mode: the sketch's)."""
    with gr.Row(equal_height=True):
        sketch = SketchPath(
            label="Sketch", type="filepath", elem_id=f"{tab}-sketch", height=260,
            sources=["upload", "clipboard"], canvas_size=(512, 512),
            brush=gr.Brush(colors=["#000000"], default_color="#000000", default_size=3),
        )  # fmt: skip
        preview = gr.Image(label="Lines it follows", interactive=False, height=260,
                           elem_id=f"{tab}-control-preview")  # fmt: skip
    c: dict[str, Component] = {"control_image": sketch}
    with gr.Row():
        c["control_type"] = gr.Dropdown(
            types, value=d.control_type, label="Control type", elem_id=f"{tab}-control-type"
        )
        c["preprocessor"] = gr.Dropdown(
            list(PREPROCESSORS), value=d.preprocessor, label="Preprocessor",
            elem_id=f"{tab}-preprocessor",
        )  # fmt: skip
    with gr.Row():
        for name, label, top, step in (
            ("control_weight", "Control weight", MAX_CONTROL_WEIGHT, 0.05),
            ("guidance_start", "Starting control step", 1, 0.01),
            ("guidance_end", "Ending control step", 1, 0.01),
        ):
            c[name] = FieldSlider(0, top, getattr(d, name), step=step, label=label,
                             elem_id=f"{tab}-{name.replace('_', '-')}")  # fmt: skip
    with gr.Row():
        c["control_mode"] = gr.Radio(
            [(label, key) for key, label in CONTROL_MODE_LABELS.items()], value=d.control_mode,
            label="Control mode", elem_id=f"{tab}-control-mode",
        )  # fmt: skip
        c["resize_mode"] = gr.Radio(["crop", "fill", "stretch"], value=d.resize_mode,
                                    label="Resize mode", elem_id=f"{tab}-resize")  # fmt: skip
    return c, preview


def _lines(engine: Callable[[], Any]) -> Callable[..., Image.Image | None]:
    def lines(sketch, control_type, preprocessor, width, height, resize_mode):
        """The lines the ControlNet will follow, shown before drawing (None: nothing to show;
        what is wrong is said beside its field at Generate)."""
        if not sketch:
            return None
        try:
            req = Request("", control_image=sketch, control_type=control_type,
                          preprocessor=preprocessor, width=int(width), height=int(height),
                          resize_mode=resize_mode)  # fmt: skip
            return control_preview(req, engine().limits)
        except (RequestError, TypeError, ValueError) as exc:
            log.info("no preview: %s", exc)
            return None

    return lines


def wire_control_preview(tab, engine: Callable[[], Any]) -> None:
    """The sketch's lines as the preprocessor finds them, shown as the sketch or a setting
    that changes them changes (`engine`: the engine in use, for its limits)."""
    f = tab.fields
    shown = [f.control_image, f.control_type, f.preprocessor, f.width, f.height, f.resize_mode]
    gr.on([c.change for c in shown], _lines(engine), shown, tab.preview,
          trigger_mode="always_last", queue=False, api_visibility="private",
          show_progress="hidden")  # fmt: skip


register_tab(TabPart(TextToImage, "Text to image", TAB_FIELDS))
register_tab(TabPart(ImageToImage, "Redraw", IMG2IMG_FIELDS, picture_inputs,
                     ("txt2img", "loopback")))  # fmt: skip
register_tab(TabPart(Inpaint, "Inpaint", INPAINT_FIELDS, inpaint_inputs, ("img2img", "txt2img"),
                     {"image": "picture", "mask": "mask"}))  # fmt: skip
register_tab(TabPart(Sketch, "Sketch to style", SKETCH_FIELDS, control_inputs,
                     ("img2img", "txt2img"), {"control_image": "sketch"},
                     wire_control_preview))  # fmt: skip
