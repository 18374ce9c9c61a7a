"""Errors beside the field they concern, named by its label (Gradio's validators): checked when
Generate is clicked, each message kept until its field changes. A picture is checked as soon as
it is uploaded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

import gradio as gr

from kshd.drawing.gui_actions import user_error
from kshd.drawing.gui_parts import Tab
from kshd.drawing.request import Limits, Request, RequestError, input_picture, validate

log = logging.getLogger(__name__)


def _error(req: Request, limits: Limits, picture: bool) -> RequestError | None:
    """The first thing wrong with the request (the picture's content too), or None."""
    try:
        validate(req, limits)
        if picture:
            if not req.image:
                raise RequestError("image", "upload a picture to redraw")
            input_picture(req.image, limits)
    except RequestError as exc:
        return exc
    return None


def _said(exc: RequestError, labels: dict[str, str]) -> str:
    """`width: 100 is ...` as the page names it: `Width: 100 is ...`."""
    text = str(exc)
    return labels[exc.field] + text[len(exc.field) :] if exc.field in labels else text


def request_check(tab: Tab, defaults: Request, limits: Limits) -> Callable[..., list]:
    """The Generate button's validator: one verdict per input of the tab, in order, each field
    checked on its own (the others at their defaults), so every bad field is named at once."""
    names = tab.names
    labels = {n: c.label for n, c in zip(names, tab.inputs(), strict=True)}
    base = {**asdict(defaults), "image": None}

    def check(*values) -> list:
        verdicts = []
        for name, value in zip(names, values, strict=True):
            exc = _error(Request(**{**base, name: value}), limits, picture=name == "image")
            bad = exc is not None and exc.field == name
            if bad:
                log.info("refused in the page: %s", _said(exc, labels))  # one line
            verdicts.append(gr.validate(not bad, _said(exc, labels) if bad else ""))
        return verdicts

    return check


def picture_check(limits: Limits) -> Callable[[str | None], None]:
    """An upload's check, as it arrives: a file that is not a usable picture is said at once."""

    def check(path: str | None) -> None:
        if path is None:
            return
        try:
            input_picture(path, limits)
        except RequestError as exc:
            said = _said(exc, {"image": "Picture"})
            log.info("refused in the page: %s", said)
            raise user_error(said, title="Not a usable picture") from exc

    return check


def wire_checks(tab: Tab, limits: Limits) -> None:
    """A field's message (from Generate's check) stays until the field changes: any event of
    the field clears its inputs' messages. A picture is checked as soon as it is uploaded."""
    quiet = {"api_visibility": "private", "show_progress": "hidden", "concurrency_limit": None,
             "trigger_mode": "always_last"}  # fmt: skip
    for name, component in zip(tab.names, tab.inputs(), strict=True):
        component.change(lambda value: None, component, None, **quiet)
        if name == "image":
            component.upload(picture_check(limits), component, None, **quiet)
