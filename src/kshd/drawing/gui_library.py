"""The studio's PNG Info and History tabs: read the A1111 `parameters` of any PNG (the app's or
AUTOMATIC1111's), browse earlier drawings from the outputs folder newest first, and send either
to a drawing tab with every parameter it names."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from kshd.drawing.gui_actions import user_error
from kshd.drawing.gui_components import PicturePath
from kshd.drawing.gui_parts import Tab
from kshd.drawing.pnginfo import read_parameters, request_fields

log = logging.getLogger(__name__)
PAGE_SIZE = 24  # History: drawings a page


def png_info(
    path: str | None, control_models: dict | None = None,
    here: Callable[[str], str | None] | None = None,
) -> tuple[str, str]:  # fmt: skip
    """(the `parameters` text, a note: what the file lacks, or the keys the app cannot use;
    a ControlNet unit's model is looked up among `control_models`; `here`: what of its model
    and LoRAs is not here, one line, e.g. `Engine.not_here`)."""
    if not path:
        return "", ""
    try:
        text = read_parameters(path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        # named by the uploaded file's own name: the server's temporary path is nobody's business
        unknown = isinstance(exc, UnidentifiedImageError)
        why = "is not an image" if unknown else "cannot be read (truncated, corrupt or too large)"
        said = f"PNG file: {Path(path).name} {why}"
        log.info("refused: %s", said)
        raise user_error(said, title="Not a picture") from exc
    if not text:
        return "", "This picture holds no generation parameters (A1111's `parameters` chunk)."
    _, unused = request_fields(text, "", "", control_models)
    notes = [f"Not used here: {', '.join(unused)}."] if unused else []
    if here is not None and (missing := here(text)):
        notes.append(missing)
    return text, "\n\n".join(notes)


PICTURES = ("image", "control_image")  # a tab's pictures: the PNG is sent as img2img's only


def _sent(target: Tab) -> list[str]:
    """The fields of `target` a text's parameters may fill."""
    return [n for n in target.names if n not in PICTURES]


def send_parameters(target: Tab, tabs: gr.Tabs, control_models: dict) -> Callable[..., tuple]:
    """A send button's function: the text's parameters into `target`'s fields (the picture
    too, for image-to-image); a field the text does not name is left as it is."""

    def send(text: str, picture: str | None, positive_prefix: str, negative_prefix: str):
        if not text:
            raise user_error("no parameters to send: open a PNG written by the app or A1111",
                             title="Nothing to send")  # fmt: skip
        fields, _ = request_fields(text, positive_prefix, negative_prefix, control_models)
        values = [fields.get(name, gr.skip()) for name in _sent(target)]
        head = [picture] if target.name == "img2img" else []
        return (*head, *values, gr.Tabs(selected=target.name))

    return send


def _targets(target: Tab) -> list:
    f = target.fields
    head = [f.image] if target.name == "img2img" else []
    return [*head, *f.inputs(_sent(target))]


def build_pnginfo(tabs_by_name: dict[str, Tab], tabs: gr.Tabs, control_models: dict,
                  here: Callable[[str], str | None] | None = None) -> None:  # fmt: skip
    """PNG Info (inside a gr.Tab): drop a PNG, read its parameters, send them on; `here`: see
    `png_info`."""
    with gr.Row(equal_height=False):
        with gr.Column():
            png = PicturePath(
                type="filepath", label="PNG file", elem_id="pnginfo-image", height=360
            )
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, elem_id="pnginfo-text")
            note = gr.Markdown(elem_id="pnginfo-note")
            buttons = _send_buttons("pnginfo")
    read = functools.partial(png_info, control_models=control_models, here=here)
    png.change(read, png, [text, note], api_name="png_info")
    _wire_sends(buttons, text, png, tabs_by_name, tabs, control_models)


def _send_buttons(prefix: str) -> dict[str, gr.Button]:
    with gr.Row():
        return {
            name: gr.Button(label, size="sm", elem_id=f"{prefix}-send-to-{name}")
            for name, label in (("txt2img", "Send to text-to-image"),
                                ("img2img", "Send to image-to-image"),
                                ("sketch", "Send to sketch to style"))
        }  # fmt: skip


def _wire_sends(buttons: dict, text, picture, tabs_by_name: dict[str, Tab], tabs,
                control_models: dict) -> None:  # fmt: skip
    for name, button in buttons.items():
        target = tabs_by_name[name]
        f = target.fields
        button.click(
            send_parameters(target, tabs, control_models),
            [text, picture, f.positive_prefix, f.negative_prefix],
            [*_targets(target), tabs],
            queue=False,
            api_visibility="private",
        )


def history_page(outputs_dir: str, page: int) -> tuple[list[tuple[str, str]], str, list[str]]:
    """One page of the drawings under outputs_dir, newest first: (gallery items, "page n of
    m", their paths)."""
    files = sorted(
        Path(outputs_dir).glob("*/*/*.png"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    pages = max(1, -(-len(files) // PAGE_SIZE))
    page = min(max(1, int(page or 1)), pages)
    shown = files[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    items = [(str(p), _caption(p)) for p in shown]
    return items, f"page {page} of {pages} ({len(files)} drawings)", [str(p) for p in shown]


def _caption(path: Path) -> str:
    """`txt2img · 12-02 14:05 · seed 123` from the file's folder, time and name."""
    when = datetime.fromtimestamp(path.stat().st_mtime).strftime("%m-%d %H:%M")
    seed = path.stem.split("-", 1)[-1]
    return f"{path.parent.parent.name} · {when} · seed {seed}"


def build_history(outputs_dir: str, tabs_by_name: dict[str, Tab], tabs: gr.Tabs, tab: gr.Tab,
                  control_models: dict):  # fmt: skip
    """History (inside a gr.Tab): earlier drawings, paged, each with its parameters."""
    with gr.Row(equal_height=True):
        refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh", scale=0)
        page = gr.Number(1, precision=0, label="Page", elem_id="history-page", scale=0,
                         min_width=100)  # fmt: skip
        where = gr.Markdown(elem_id="history-where")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            gallery = gr.Gallery(
                label="Earlier drawings", elem_id="history-gallery", columns=6, height=420,
                object_fit="contain", interactive=False,
            )  # fmt: skip
        with gr.Column(scale=1):
            text = gr.Textbox(label="Parameters", lines=8, elem_id="history-text")
            buttons = _send_buttons("history")
    paths, chosen = gr.State([]), gr.State(None)
    show = (lambda p: history_page(outputs_dir, p), page, [gallery, where, paths])
    for event in (refresh.click, page.submit, tab.select):
        event(*show, queue=False, api_visibility="private")

    def select(paths: list[str], evt: gr.SelectData) -> tuple[str, str]:
        path = paths[evt.index]
        return path, read_parameters(path) or ""

    gallery.select(select, paths, [chosen, text], queue=False, api_visibility="private")
    _wire_sends(buttons, text, chosen, tabs_by_name, tabs, control_models)
