"""Two Gradio components whose values reach the handlers as sent, so the request's own checks
say what is wrong, naming the field by its label.

Gradio refuses a slider value out of range, and decodes an upload, before any handler runs, in
words of its own (or with a stack trace for a file that is not an image). They are subclasses,
not wrappers of an instance: once an event updates a component's properties (a message in its
info line), Gradio serves that page a new instance of the component's class. Gradio writes a
`.pyi` stub beside the module of any component class as it is defined; it is committed
(`gui_components.pyi`), so importing the studio writes nothing.
"""

from __future__ import annotations

import gradio as gr
from PIL import Image


class FieldSlider(gr.Slider):
    """A slider whose number arrives unchecked (a number beyond its range, typed before the
    browser clamps it, or sent by a script), for the request's check to name."""

    is_template = True  # drawn by the page as the component it extends (Gradio's convention)

    def preprocess(self, payload):
        if payload is None:
            return None
        try:
            return gr.Number.round_to_precision(float(payload), self.precision)
        except (TypeError, ValueError) as exc:
            raise gr.Error(
                f"{self.label}: {payload!r} must be a number from {self.minimum:g} to "
                f"{self.maximum:g}",
                title="Cannot draw this",
                print_exception=False,
            ) from exc


class PicturePath(gr.Image):
    """An image upload that arrives as its path, undecoded (make it with type="filepath"): the
    engine's intake checks it and says what is wrong."""

    is_template = True

    def preprocess(self, payload) -> str | None:
        if payload is None:
            return None
        return payload["path"] if isinstance(payload, dict) else payload.path


def _edited(editor: gr.ImageEditor, payload) -> dict | None:
    """Gradio's own reading of an image editor's value, a file that is no picture named."""
    try:
        return gr.ImageEditor.preprocess(editor, payload)
    except (OSError, ValueError) as exc:
        raise gr.Error(f"{editor.label}: not a picture ({exc})", title="Cannot draw this",
                       print_exception=False) from exc  # fmt: skip


class SketchPath(gr.ImageEditor):
    """A sketch uploaded or drawn on the canvas (make it with type="filepath"): its composite
    as a path (the background alone from an API caller that sends no composite), or None when
    nothing was uploaded or drawn."""

    is_template = True

    def preprocess(self, payload) -> str | None:
        value = _edited(self, payload)
        if value is None or (value["background"] is None and not value["layers"]):
            return None
        return value["composite"] or value["background"]


class MaskedPicture(gr.ImageEditor):
    """A picture with the part to redraw brushed on it (make it with type="pil"): {"image": the
    picture, "mask": its strokes as one transparent image (None when nothing is brushed)}."""

    is_template = True

    def preprocess(self, payload) -> dict | None:
        value = _edited(self, payload)
        if value is None or value["background"] is None:
            return None
        strokes = None
        for layer in value["layers"] or []:
            layer = layer.convert("RGBA")
            if layer.getchannel("A").getbbox() is None:
                continue  # an empty layer
            strokes = layer if strokes is None else Image.alpha_composite(strokes, layer)
        return {"image": value["background"].convert("RGB"), "mask": strokes}
