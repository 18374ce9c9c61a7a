"""Errors beside the field they concern, named by its label, kept until that field changes.

Gradio paints a validator's messages beside the fields, but clears all of them whenever any
other event of the page runs (a preset, a seed button, the prompt preview), so they are not
used for the text: Generate's validator only stops the job, and a listener of the same click
writes each bad field's message into the field's own `info` line (the picture's, its label),
where it stays until that field's change event puts the help text back.

A slider's number box is clamped by the browser when it loses focus (200 steps becomes 150
without a word, Gradio's slider code). The page records what was typed (`PAGE_JS`), and the
field's change event says it beside the field: "Sampling steps: 200 must be ...; set to 150".
A picture is checked as soon as it arrives.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import asdict

import gradio as gr

from kshd.drawing.gui_modes import TAB_FIELDS, tab_parts
from kshd.drawing.gui_parts import Tab
from kshd.drawing.modes.registry import validate
from kshd.drawing.request import Limits, Request, RequestError, input_picture

log = logging.getLogger(__name__)
ERROR_CLASS = "field-error"
NOTHING = {"image": "upload a picture to redraw", "control_image": "upload or draw a sketch"}
PICTURES = (gr.Image, gr.ImageEditor)  # their message goes into their label (no info line)
# Each slider's change event reads what was typed into its number box before the browser
# clamped it (recorded by PAGE_JS) and hands it to the handler through a hidden carrier input.
_TYPED_JS = """(value, _) => {{
  const typed = (window.kshdTyped || {{}})[{id!r}];
  if (window.kshdTyped) delete window.kshdTyped[{id!r}];
  return [value, typed ?? null];
}}"""


def _error(req: Request, limits: Limits, picture: str | None) -> RequestError | None:
    """The first thing wrong with the request, and with the content of its `picture` field
    ("image" or "control_image"), or None."""
    try:
        validate(req, limits)
        if picture:
            value = getattr(req, picture)
            if not value:
                raise RequestError(picture, NOTHING[picture])
            try:
                input_picture(value, limits)
            except RequestError as exc:  # said of this field
                raise RequestError(picture, str(exc).partition(": ")[2]) from exc
    except RequestError as exc:
        return exc
    return None


def _said(exc: RequestError, labels: dict[str, str]) -> str:
    """`width: 100 is ...` as the page names it: `Width: 100 is ...`."""
    text = str(exc)
    return labels[exc.field] + text[len(exc.field) :] if exc.field in labels else text


def field_messages(tab: Tab, defaults: Request, limits: Limits) -> Callable[..., list[str]]:
    """Each input's message ("" when fine), each field checked on its own (the others at their
    defaults), so every bad field is named at once."""
    labels = {n: c.label for n, c in zip(tab.names, tab.inputs(), strict=True)}
    base = {**asdict(defaults), "image": None, "control_image": None}
    part = tab_parts()[tab.name]

    def one(name: str, value) -> str:
        if isinstance(value, dict):  # inpainting's picture with the part to redraw brushed on
            if value.get("image") is not None and value.get("mask") is None:
                return f"{labels[name]}: brush the part to redraw"
            value = value.get("image")
        # a setting of the tab's mode (the ControlNet's, the inpainting's) is checked as part
        # of such a request, its pictures stood in for; a picture is checked itself
        stand_ins = part.stand_ins if name not in (*TAB_FIELDS, *NOTHING) else {}
        req = part.mode.request(**{**base, **stand_ins, name: value})
        exc = _error(req, limits, picture=name if name in NOTHING else None)
        return _said(exc, labels) if exc is not None and exc.field == name else ""

    def messages(*values) -> list[str]:
        return [one(n, v) for n, v in zip(tab.names, values, strict=True)]

    messages.one = one
    return messages


def _mark(component: gr.components.Component, message: str) -> dict:
    """The field's message in its info line (a picture's in its label), marked as an error; an
    empty message puts the field's own help text back."""
    classes = [c for c in component.elem_classes or [] if c != ERROR_CLASS]
    classes += [ERROR_CLASS] if message else []
    if isinstance(component, PICTURES):
        return gr.update(label=message or component.label, elem_classes=classes)
    return gr.update(info=message or component.info or "", elem_classes=classes)


def request_check(tab: Tab, defaults: Request, limits: Limits) -> Callable[..., list]:
    """The Generate button's validator: it stops the job; the texts are `mark_fields`'."""
    messages = field_messages(tab, defaults, limits)
    return lambda *values: [gr.validate(not m, "") for m in messages(*values)]


def _clamped(slider: gr.Slider, typed) -> float | None:
    """The number the browser put in place of `typed` (None: it kept what was typed)."""
    try:
        number = float(typed)
    except (TypeError, ValueError):
        return None
    if slider.minimum <= number <= slider.maximum:
        return None
    return min(max(number, slider.minimum), slider.maximum)


def wire_checks(tab: Tab, defaults: Request, limits: Limits) -> None:
    """Generate writes each bad field's message beside it (registered before the job's click,
    whose failing validator ends the click's other listeners); each field's change puts its
    own help back, or says what the browser did to a typed number, or checks a new picture."""
    messages = field_messages(tab, defaults, limits)
    inputs = tab.inputs()
    quiet = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}

    def mark_all(*values) -> list:
        said = messages(*values)
        for text in filter(None, said):
            log.info("refused in the page: %s", text)  # one line each, no traceback
        marks = [_mark(c, m) for c, m in zip(inputs, said, strict=True)]
        return [*marks, refused_status([c.label for c, m in zip(inputs, said, strict=True) if m])]

    tab.generate.click(mark_all, inputs, [*inputs, tab.status], trigger_mode="multiple", **quiet)
    carrier = gr.Textbox(visible=False)
    for name, component in zip(tab.names, inputs, strict=True):
        if isinstance(component, gr.Slider):
            note = _slider_note(name, component, messages.one)
            component.change(note, [component, carrier], component, trigger_mode="always_last",
                             js=_TYPED_JS.format(id=component.elem_id), **quiet)  # fmt: skip
        else:
            check = _field_check(name, component, messages.one)
            component.change(check, component, component, trigger_mode="always_last", **quiet)


def refused_status(labels: list[str]):
    """Beside Generate, the refused fields by label (their messages stand beside them, maybe
    below the fold); nothing changed when none is."""
    if not labels:
        return gr.skip()
    named = html.escape(", ".join(labels))
    return f'<span class="status-error">Not drawn: {named}: see the message beside it</span>'


def _field_check(name: str, component, one: Callable[[str, object], str]) -> Callable:
    """A changed field's help back; a new picture checked as it arrives (none is no error)."""

    def check(value) -> dict:
        return _said_on(component, one(name, value) if name in NOTHING and value else "")

    return check


def _said_on(component: gr.components.Component, message: str) -> dict:
    if message:
        log.info("refused in the page: %s", message)
    return _mark(component, message)


def _slider_note(name: str, slider: gr.Slider, one: Callable[[str, object], str]) -> Callable:
    def note(value, typed) -> dict:
        clamped = _clamped(slider, typed)
        if clamped is None and _clamped(slider, value) is None:
            return _mark(slider, "")  # changed by the user, within the slider: help back
        seen = typed if clamped is not None else value  # typed, or not yet clamped
        put = clamped if clamped is not None else _clamped(slider, value)
        message = one(name, float(seen)) or f"{slider.label}: {float(seen):g} is out of range"
        return _said_on(slider, f"{message}; the box was set to {put:g}")

    return note
