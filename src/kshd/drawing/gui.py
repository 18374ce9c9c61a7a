"""`kshd gui`: the drawing studio, laid out like AUTOMATIC1111 (Text to image, Image to image).

One engine serves every browser tab: the queue runs one job at a time on the model and refuses
requests beyond `generate.gui.queue_size`. Both drawing handlers are API endpoints by name
(`/txt2img`, `/img2img`) for `gradio_client`, and so are Interrupt and Skip (`/txt2img_interrupt`,
`/txt2img_skip`, and img2img's), and the Dataset tab's caption review actions
(kshd.drawing.gui_dataset). Bound to 127.0.0.1 unless told otherwise, no share link, no
analytics; bad input is answered with a message in the page, never a stack trace.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from dataclasses import replace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from kshd.config.schema import ProjectConfig  # noqa: E402
from kshd.data.caption_review import ReviewFiles  # noqa: E402
from kshd.drawing.catalog import NONE, LoraCatalog  # noqa: E402
from kshd.drawing.engine import Engine, EngineSettings  # noqa: E402
from kshd.drawing.gui_actions import (  # noqa: E402
    Handlers,
    busy,
    effective_prompts,
    reuse_seed,
    sender,
    swap,
)
from kshd.drawing.gui_checks import request_check, wire_checks  # noqa: E402
from kshd.drawing.gui_dataset import build_dataset  # noqa: E402
from kshd.drawing.gui_library import build_history, build_pnginfo  # noqa: E402
from kshd.drawing.gui_modes import TAB_FIELDS, tab_parts  # noqa: E402
from kshd.drawing.gui_parts import PAGE_CSS, PAGE_JS, Tab, build_tab, preset_updates  # noqa: E402
from kshd.drawing.gui_queue import estimate_queue  # noqa: E402
from kshd.drawing.gui_roots import Roots  # noqa: E402
from kshd.drawing.gui_xyz import build_xyz  # noqa: E402
from kshd.drawing.request import Request  # noqa: E402

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _model_bar(handlers: Handlers, catalog: LoraCatalog, models: list[str]):
    """The base model and LoRA in use, always on screen, each a chooser (the LoRAs refreshed by
    🔄); the engine's notes under them, once, small. A switch is a job of the queue; its event
    is returned (the size presets follow the base's family after it)."""
    engine, in_use = handlers.engine, in_use_of(handlers)
    with gr.Row(elem_id="model-bar", equal_height=True):
        base = gr.Dropdown(
            models, value=engine.settings.pretrained, label="Base model", allow_custom_value=True,
            elem_id="base-model", scale=3,
        )  # fmt: skip
        lora = gr.Dropdown(
            catalog.choices(), value=engine.lora_path or NONE, label="LoRA", elem_id="lora-choice",
            scale=3, allow_custom_value=True,  # a .safetensors path typed in; checked on switch
        )  # fmt: skip
        refresh = gr.Button("Refresh", elem_id="lora-refresh", scale=0, min_width=70, size="sm")
        with gr.Column(scale=4):
            status = gr.Markdown(model_status(engine), elem_id="model-status")
    private = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    refresh.click(lambda: gr.Dropdown(choices=catalog.choices()), None, lora, **private)
    # "/set_model" for scripts; both choosers run it as a job of the drawing queue
    lora.input(handlers.set_model, [base, lora], status, api_name="set_model",
               concurrency_id="engine").failure(in_use, None, [base, lora], **private)  # fmt: skip
    switched = base.input(handlers.set_model, [base, lora], status, api_visibility="private",
                          concurrency_id="engine")  # fmt: skip
    switched.failure(in_use, None, [base, lora], **private)  # a refused choice reverts
    return switched


def in_use_of(handlers: Handlers) -> Callable[[], tuple]:
    """The choosers put back to the base and LoRA in use (after a refused choice)."""
    return lambda: (handlers.engine.settings.pretrained, handlers.engine.lora_path or NONE)


def preset_size(label: str) -> tuple[int, int]:
    width, height = label.split("×")
    return int(width), int(height)


def model_status(engine: Engine) -> str:
    lora = f"**{engine.lora_name}** ({engine.lora_hash})" if engine.lora_name else "none"
    model = f"**{engine.model_name}**" + (f" ({engine.model_hash})" if engine.model_hash else "")
    text = f"Model: {model} · LoRA: {lora}"
    if not engine.notes:
        return text
    n = len(engine.notes)
    said = "".join(f"<li>{html.escape(note)}</li>" for note in engine.notes)
    return f"{text}<details><summary>{n} note{'s' * (n > 1)}</summary><ul>{said}</ul></details>"


def _wire_tab(
    tab: Tab, handlers: Handlers, page_tabs: tuple[gr.Tabs, gr.Tabs], targets: dict[str, Tab],
    defaults: Request,
) -> None:  # fmt: skip
    """The events of one tab: generate (checked, locked while it runs), stop, seeds, sizes,
    sends, and each field's own check. `tabs`: the page's tabs and image-to-image's own."""
    tabs, modes = page_tabs
    limits = handlers.engine.limits
    wire_checks(tab, defaults, limits)
    started = gr.State(None)
    draw = handlers.live_drawer(tab.name)  # each batch, a preview and the ETA as it draws
    # "multiple": a click as the button comes back belongs to the next job, not to this chain
    # (Gradio's "once" would drop it); the button itself is locked while the job runs
    # the page's own path: every field checked first (errors beside their fields), then the job;
    # scripts call the drawing handler itself (`/txt2img`), which checks the same again
    job = tab.generate.click(
        lambda *values: busy(), tab.inputs(), [*tab.buttons(), started],
        validator=request_check(tab, defaults, limits), concurrency_limit=None,
        api_visibility="private", trigger_mode="multiple", show_progress="hidden",
    )  # fmt: skip
    job = job.success(
        draw,
        tab.inputs(),
        [tab.gallery, tab.info, tab.files, tab.drawn, tab.shown],
        api_name=tab.name,
        show_progress_on=[tab.status, tab.gallery],
        concurrency_id="engine",  # one queue with the model switches
    )
    # after the job: its time, or its error; either way Generate comes back (Gradio's page
    # runs no `.then` listener after an error, so each outcome has its own)
    private = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    job.success(handlers.idle, [started, tab.drawn], [*tab.buttons(), tab.status], **private)
    tab.shown.change(lambda image: image, tab.shown, tab.live, **private)  # the live preview
    job.failure(handlers.failed, None, [*tab.buttons(), tab.status], **private)
    stops = {"interrupt": handlers.interrupter(tab.name), "skip": handlers.skip}
    for how, button in (("interrupt", tab.interrupt), ("skip", tab.skip)):
        button.click(stops[how], None, tab.status, queue=False, api_name=f"{tab.name}_{how}")
    f = tab.fields
    tab.random_seed.click(lambda: -1, None, f.seed, **private)
    tab.reuse_seed.click(reuse_seed, [tab.drawn, tab.selected], f.seed, **private)
    tab.swap.click(swap, [f.width, f.height], [f.width, f.height], **private)
    for button in tab.presets:  # "832×1216": the size it sets
        button.click(preset_size, button, [f.width, f.height], **private)
    texts = [f.positive_prefix, f.prompt, f.negative_prefix, f.negative_prompt]
    for text in texts:
        text.change(effective_prompts, texts, tab.effective, **private)
    tab.gallery.select(_selected_index, None, tab.selected, **private)
    part = tab_parts()[tab.name]
    if part.wire is not None:  # the mode's own events (the sketch's preview of its lines)
        part.wire(tab, lambda: handlers.engine)
    for target, button in tab.sends.items():
        into = targets["img2img" if target == "loopback" else target]
        picture = into.name == "img2img"
        outputs = into.inputs() if picture else into.fields.inputs(TAB_FIELDS)
        sent = button.click(
            sender(into.names, picture, into.name),
            [tab.drawn, tab.selected, tab.gallery],
            [*outputs, tabs],
            **private,
        )
        if picture:  # image-to-image's own tab, not its Inpaint one
            sent.then(lambda: gr.Tabs(selected="img2img-redraw"), None, modes, **private)


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index


def build_ui(
    engine: Engine,
    defaults: Request,
    catalog: LoraCatalog | None = None,
    models: list[str] = (),
    handlers: Handlers | None = None,
    review: ReviewFiles | None = None,
) -> gr.Blocks:
    """The page; `review`: the workspace's caption review files, for the Dataset tab (none
    without them)."""
    handlers = handlers or Handlers(engine, None, model_status)
    catalog = catalog or LoraCatalog(engine.lora_path, None, None)
    models = list(dict.fromkeys([engine.settings.pretrained, *models]))
    with gr.Blocks(title="KSH Drawing AI", analytics_enabled=False) as ui:
        switched = _model_bar(handlers, catalog, models)
        with gr.Tabs() as tabs:
            built, parts = {}, tab_parts()
            types, limits = list(engine.settings.control_models), engine.limits
            family = engine.family  # the size presets of its family

            def add(name: str, **where) -> None:  # a mode's tab (gui_modes), where it sits
                with gr.Tab(parts[name].label, **{"id": name, **where}):
                    built[name] = build_tab(name, defaults, limits, types, family)

            add("txt2img")
            with gr.Tab("Image to image", id="img2img"), gr.Tabs(elem_id="img2img-modes") as modes:
                add("img2img", id="img2img-redraw")
                add("inpaint", elem_id="inpaint-tab")
            add("sketch")
            for name in [n for n in parts if n not in built]:  # tabs added since: after these
                add(name)
            with gr.Tab("X/Y/Z plot", id="xyz"):
                build_xyz(handlers, catalog, built["txt2img"])
            with gr.Tab("PNG Info", id="pnginfo"):
                build_pnginfo(built, tabs, engine.settings.control_models,
                              lambda text: handlers.engine.not_here(text))  # fmt: skip
            with gr.Tab("History", id="history") as history:
                build_history(engine.settings.outputs_dir, built, tabs, history,
                              engine.settings.control_models)  # fmt: skip
            if review is not None:
                with gr.Tab("Dataset", id="dataset") as dataset:
                    build_dataset(review, dataset)
        presets = [b for tab in built.values() for b in tab.presets]
        switched.then(lambda: preset_updates(handlers.engine.family, limits, len(built)), None,
                      presets, queue=False, api_visibility="private")  # fmt: skip
        for tab in built.values():
            _wire_tab(tab, handlers, (tabs, modes), built, defaults)
            f = tab.fields
            ui.load(effective_prompts,
                    [f.positive_prefix, f.prompt, f.negative_prefix, f.negative_prompt],
                    tab.effective, queue=False, api_visibility="private")  # fmt: skip
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
    cfg: ProjectConfig, host: str | None = None, port: int | None = None, lora: str | None = None,
    auth: str | None = None, block: bool = True,
) -> tuple[gr.Blocks, Engine]:  # fmt: skip
    """Load the engine and start the server (with `block=False` it returns at once, for tests)."""
    g = cfg.generate
    host = host or g.gui.host
    credentials = parse_auth(auth)
    if host not in LOOPBACK and credentials is None:
        log.warning("serving on %s without a password: set KSHD_GUI_AUTH=user:password", host)
    strength = cfg.train.alpha / cfg.train.rank  # for checkpoints that record no adapter
    settings = EngineSettings.from_settings(cfg.model, g, lora)
    engine = Engine(replace(settings, checkpoint_strength=strength))
    gui = g.gui
    catalog = LoraCatalog(g.lora, gui.checkpoints_dir, gui.eval_metrics, tuple(gui.lora_dirs))
    handlers = Handlers(engine, strength, model_status)
    if host not in LOOPBACK:  # the model bar loads only what is configured
        folders = (g.lora, gui.checkpoints_dir, *gui.lora_dirs)
        handlers.roots = Roots((cfg.model.pretrained, *gui.models), tuple(filter(None, folders)))
    defaults = Request.from_settings(g, clip_skip=cfg.model.clip_skip)  # the base's, shown
    ui = build_ui(engine, defaults, catalog, list(gui.models), handlers,
                  ReviewFiles.of(cfg))  # fmt: skip
    ui.queue(default_concurrency_limit=1, max_size=g.gui.queue_size)
    handlers.queue = ui._queue  # noqa: SLF001 (Interrupt takes a tab's waiting job out of it)
    drawings = {name: part.fields for name, part in tab_parts().items()}
    estimate_queue(ui._queue, lambda: handlers.engine.pace, drawings)  # noqa: SLF001
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
        js=PAGE_JS,
        css=PAGE_CSS,
    )
    return ui, engine


def launch(cfg: ProjectConfig, **kwargs) -> int:
    """Serve until Ctrl-C; then let a drawing in progress finish before the process exits."""
    _, engine = serve(cfg, **kwargs)
    with engine.lock:
        return 0
