"""`kshd gui`: the web GUI, two tabs like AUTOMATIC1111 (Text to image, Image to image).

One engine serves every browser tab: the queue runs one job at a time on the model and refuses
requests beyond `generate.gui.queue_size`. Both handlers are API endpoints by name (`/txt2img`,
`/img2img`) for `gradio_client`. Bound to 127.0.0.1 unless told otherwise, no share link, no
analytics; bad input is answered with a message in the page, never a stack trace.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import fields, make_dataclass
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from kshd.drawing.engine import Engine  # noqa: E402
from kshd.drawing.request import SAMPLERS, Limits, Request, RequestError  # noqa: E402

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# Gradio checks slider bounds and decodes uploads before a handler runs, with messages that do
# not name the field (or a stack trace for a file that is not an image). The two instance-level
# wrappers below fix that; subclassing a component would make Gradio write a .pyi file into
# this package at import time.


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 (used like the component it makes)
    """A gr.Slider whose out-of-range error names the field (API clients can send any number)."""
    slider = gr.Slider(*args, **kwargs)
    check = slider.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except (gr.Error, TypeError, ValueError) as exc:
            raise gr.Error(
                f"{slider.label}: {payload!r} must be a number from {slider.minimum:g} to "
                f"{slider.maximum:g}",
                title="Cannot draw this",
            ) from exc

    slider.preprocess = preprocess
    return slider


def Picture(**kwargs) -> gr.Image:  # noqa: N802
    """A gr.Image whose upload reaches the handler as a path, undecoded: the engine's intake
    checks it and says what is wrong."""
    image = gr.Image(type="filepath", **kwargs)

    def preprocess(payload) -> str | None:
        if payload is None:
            return None
        return payload["path"] if isinstance(payload, dict) else payload.path

    image.preprocess = preprocess
    return image


# The Request fields each tab's inputs fill, in the order Gradio passes them to the handlers and
# names them in the API (`/txt2img`, `/img2img`, for gradio_client): written once, here; Fields,
# the input components' order and the handlers' signatures all follow these tuples.
TAB_FIELDS = (
    "prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "seed", "width", "height",
    "batch_count", "batch_size", "lora_scale", "positive_prefix", "negative_prefix",
)  # fmt: skip
IMG2IMG_FIELDS = ("image", "strength", "resize_mode", *TAB_FIELDS)
REQUEST_TYPES = {f.name: f.type for f in fields(Request)}

Fields = make_dataclass(
    "Fields",
    [(name, gr.components.Component) for name in TAB_FIELDS],
    namespace={
        "__doc__": "The input components of one tab, by the Request field they fill.",
        "inputs": lambda self: [getattr(self, name) for name in TAB_FIELDS],
    },
)


def _fields(tab: str, d: Request, limits: Limits) -> Fields:
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tab}-prompt", value=d.prompt)
    negative = gr.Textbox(label="Negative prompt", lines=2, value=d.negative_prompt)
    with gr.Row():
        sampler = gr.Dropdown(
            [(label, key) for key, (label, _, _) in SAMPLERS.items()],
            value=d.sampler,
            label="Sampling method",
        )
        steps = Slider(1, limits.max_steps, d.steps, step=1, label="Sampling steps")
    with gr.Row():
        width = Slider(64, limits.max_side, d.width, step=8, label="Width")
        height = Slider(64, limits.max_side, d.height, step=8, label="Height")
    with gr.Row():
        count = Slider(1, limits.max_batch_count, d.batch_count, step=1, label="Batch count")
        size = Slider(1, limits.max_batch_size, d.batch_size, step=1, label="Batch size")
    with gr.Row():
        cfg_scale = Slider(1, 30, d.cfg_scale, step=0.5, label="CFG scale")
        seed = gr.Number(d.seed, precision=0, label="Seed (-1 = random)", elem_id=f"{tab}-seed")
        m = limits.max_lora_scale
        lora = Slider(-m, m, d.lora_scale, step=0.05, label="LoRA strength")
    with gr.Accordion("Prompt prefixes (added before your prompts)", open=False):
        pos_prefix = gr.Textbox(label="Positive prefix", value=d.positive_prefix)
        neg_prefix = gr.Textbox(label="Negative prefix", lines=3, value=d.negative_prefix)
    return Fields(
        prompt=prompt, negative_prompt=negative, sampler=sampler, steps=steps,
        cfg_scale=cfg_scale, seed=seed, width=width, height=height, batch_count=count,
        batch_size=size, lora_scale=lora, positive_prefix=pos_prefix, negative_prefix=neg_prefix,
    )  # fmt: skip


def _outputs(tab: str):
    gallery = gr.Gallery(
        label="Images",
        elem_id=f"{tab}-gallery",
        columns=4,
        interactive=False,
        buttons=["download", "download_all", "fullscreen"],
    )
    info = gr.Textbox(label="Generation parameters", lines=4, elem_id=f"{tab}-info")
    files = gr.File(label="PNG files (with parameters)", file_count="multiple")
    return gallery, info, files


def request_handler(names: tuple[str, ...], draw: Callable[..., Any]) -> Callable[..., Any]:
    """A method whose parameters are `self`, the Request fields `names` in order and Gradio's
    progress, as an explicit signature (Gradio passes a tab's inputs by position and names the
    API's parameters from it); `draw(self, values, progress)` gets the fields by name."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("self", kind)]
        + [inspect.Parameter(n, kind, annotation=REQUEST_TYPES[n]) for n in names]
        + [inspect.Parameter("progress", kind, default=gr.Progress())]
    )

    def handler(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return draw(values.pop("self"), values, values.pop("progress"))

    handler.__signature__ = signature
    return handler


class Handlers:
    """The callbacks: build a Request, run the engine with progress, turn errors into messages."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _run(self, values: dict, progress: gr.Progress):
        """`values`: the Request fields by name, as the tab's inputs gave them."""
        if "image" in values and not values["image"]:
            raise gr.Error("image: upload a picture to redraw", title="Cannot draw this")
        req = Request(**values)
        progress((0, req.steps), desc="waiting for the model", unit="steps")
        try:
            result = self.engine.generate(
                req, lambda done, total: progress((done, total), desc="drawing", unit="steps")
            )
        except RequestError as exc:
            raise gr.Error(str(exc), title="Cannot draw this") from exc
        gallery = [(str(p), f"seed {s}") for p, s in zip(result.paths, result.seeds, strict=True)]
        return gallery, "\n\n".join(result.infotexts), [str(p) for p in result.paths]

    txt2img = request_handler(TAB_FIELDS, _run)
    img2img = request_handler(IMG2IMG_FIELDS, _run)


def _send_to_img2img(gallery, index):
    """The selected (or first) image of the text-to-image gallery as the image-to-image input."""
    if not gallery:
        raise gr.Error("no image yet: generate one first")
    item = gallery[index or 0] if (index or 0) < len(gallery) else gallery[0]
    path = item[0] if isinstance(item, list | tuple) else item
    return getattr(path, "path", path), gr.Tabs(selected="img2img")


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index


def build_ui(engine: Engine, defaults: Request) -> gr.Blocks:
    handlers = Handlers(engine)
    limits = engine.limits
    with gr.Blocks(title="KSH Drawing AI", analytics_enabled=False) as ui:
        gr.Markdown("## KSH Drawing AI — draw in KSH's style")
        if engine.notes:
            gr.Markdown("\n".join(f"- {n}" for n in engine.notes), elem_id="notes")
        with gr.Tabs() as tabs:
            with gr.Tab("Text to image", id="txt2img"):
                t = _fields("txt2img", defaults, limits)
                t_go = gr.Button("Generate", variant="primary", elem_id="txt2img-generate")
                t_gallery, t_info, t_files = _outputs("txt2img")
                send = gr.Button("Send to image-to-image", elem_id="send-to-img2img")
            with gr.Tab("Image to image", id="img2img"):
                with gr.Row():
                    image = Picture(label="Picture", elem_id="img2img-image")
                    with gr.Column():
                        strength = Slider(0, 1, defaults.strength, step=0.01,
                                             label="Denoising strength")  # fmt: skip
                        resize = gr.Radio(["crop", "fill", "stretch"], value=defaults.resize_mode,
                                          label="Resize mode")  # fmt: skip
                i = _fields("img2img", defaults, limits)
                i_go = gr.Button("Generate", variant="primary", elem_id="img2img-generate")
                i_gallery, i_info, i_files = _outputs("img2img")
        selected = gr.State(0)
        t_go.click(handlers.txt2img, t.inputs(), [t_gallery, t_info, t_files], api_name="txt2img")
        i_inputs = {"image": image, "strength": strength, "resize_mode": resize} | vars(i)
        i_go.click(
            handlers.img2img,
            [i_inputs[name] for name in IMG2IMG_FIELDS],
            [i_gallery, i_info, i_files],
            api_name="img2img",
        )
        t_gallery.select(_selected_index, None, selected, api_visibility="private")
        send.click(_send_to_img2img, [t_gallery, selected], [image, tabs], api_visibility="private")
    return ui


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """`user:password` (from KSHD_GUI_AUTH) or None."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("KSHD_GUI_AUTH must be `user:password`")
    return user, password


def serve(
    cfg: DictConfig, host: str | None = None, port: int | None = None, lora: str | None = None,
    auth: str | None = None, block: bool = True,
) -> tuple[gr.Blocks, Engine]:  # fmt: skip
    """Load the engine and start the server (with `block=False` it returns at once, for tests)."""
    from kshd.drawing.settings import default_request, engine_settings

    g = cfg.generate
    host = host or g.gui.host
    credentials = parse_auth(auth)
    if host not in LOOPBACK and credentials is None:
        log.warning("serving on %s without a password: set KSHD_GUI_AUTH=user:password", host)
    engine = Engine(engine_settings(cfg, lora))
    ui = build_ui(engine, default_request(cfg))
    ui.queue(default_concurrency_limit=1, max_size=g.gui.queue_size)
    ui.launch(
        server_name=host,
        server_port=port or g.gui.port,
        share=False,
        auth=credentials,
        max_file_size=f"{g.limits.max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        ssr_mode=False,
        quiet=not block,
        footer_links=["api"],
    )
    return ui, engine


def launch(cfg: DictConfig, **kwargs) -> int:
    """Serve until Ctrl-C; then let a drawing in progress finish before the process exits."""
    _, engine = serve(cfg, **kwargs)
    with engine.lock:
        return 0
