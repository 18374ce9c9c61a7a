"""`kshd gui`: the web GUI, two tabs like AUTOMATIC1111 (Text to image, Image to image).

One engine serves every browser tab: the queue runs one job at a time on the model and refuses
requests beyond `generate.gui.queue_size`. Both handlers are API endpoints by name (`/txt2img`,
`/img2img`) for `gradio_client`. Bound to 127.0.0.1 unless told otherwise, no share link, no
analytics; bad input is answered with a message in the page, never a stack trace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

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


@dataclass
class Fields:
    """The inputs of one tab, named as the Request fields they fill, in the order the handlers
    take them (tests/test_generation.py holds the three in step)."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    lora_scale: gr.Slider
    positive_prefix: gr.Textbox
    negative_prefix: gr.Textbox

    def inputs(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


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


class Handlers:
    """The callbacks: build a Request, run the engine with progress, turn errors into messages."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _run(self, values: dict, progress: gr.Progress):
        """`values`: the handler's arguments by name, which are Request fields."""
        values = {k: v for k, v in values.items() if k not in ("self", "progress")}
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

    def txt2img(
        self, prompt: str, negative_prompt: str, sampler: str, steps: float, cfg_scale: float,
        seed: float, width: float, height: float, batch_count: float, batch_size: float,
        lora_scale: float, positive_prefix: str, negative_prefix: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to ask for progress)
    ):  # fmt: skip
        return self._run(dict(locals()), progress)

    def img2img(
        self, image: str | None, strength: float, resize_mode: str, prompt: str,
        negative_prompt: str, sampler: str, steps: float, cfg_scale: float, seed: float,
        width: float, height: float, batch_count: float, batch_size: float, lora_scale: float,
        positive_prefix: str, negative_prefix: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ):  # fmt: skip
        if not image:
            raise gr.Error("image: upload a picture to redraw", title="Cannot draw this")
        return self._run(dict(locals()), progress)


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
        i_go.click(
            handlers.img2img,
            [image, strength, resize, *i.inputs()],
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
