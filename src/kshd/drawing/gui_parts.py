"""The studio's components, laid out as AUTOMATIC1111 lays them out: prompts across the top with
Generate, Interrupt and Skip beside them; settings on the left; the gallery, its parameters and the
send buttons on the right, so what a click changes is on screen at 1366x768."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from kshd.drawing.gui_components import FieldSlider
from kshd.drawing.gui_modes import TAB_FIELDS, tab_parts
from kshd.drawing.request import SAMPLERS, Limits, Request

# The sliders start at 0: the browser silently raises a typed value below a slider's minimum to
# it, so 0 steps would draw 1; from 0, the request's own check names the field instead.


CLIP_SKIP_INFO = "2: the text encoder's penultimate layer (Anything V5, NAI-lineage models)"

# Sizes an SD 1.x model was trained at (A1111's usual picks); the swap button turns them.
# the sizes each family was trained at: SD 1.x's 512 px, SDXL's 1 megapixel buckets
SIZE_PRESETS = {
    "sd1": ((512, 512), (512, 768), (768, 512)),
    "sdxl": ((1024, 1024), (832, 1216), (1216, 832)),
}


class Fields:
    """The input components of one tab, as attributes named by the Request field they fill."""

    def __init__(self, **components: gr.components.Component):
        self.__dict__.update(components)

    def inputs(self, names: tuple[str, ...] = TAB_FIELDS) -> list[gr.components.Component]:
        return [getattr(self, n) for n in names]


@dataclass
class Tab:
    """One tab's components: its inputs (`fields`), its buttons and its outputs."""

    name: str
    fields: Fields
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    status: gr.Markdown
    effective: gr.Markdown
    random_seed: gr.Button
    reuse_seed: gr.Button
    swap: gr.Button
    presets: list[gr.Button]
    gallery: gr.Gallery
    info: gr.Textbox
    files: gr.File
    sends: dict[str, gr.Button]  # target ("txt2img", "img2img") -> its button
    drawn: gr.State  # the requests of the gallery's images, one per image, for send and reuse
    selected: gr.State  # the gallery's selected index
    preview: gr.Image | None = None  # the sketch tab's control image, shown before drawing
    live: gr.Image | None = None  # the live preview while drawing (drawing.preview)
    shown: gr.State | None = None  # the preview the job sends (a State: not in the API)

    @property
    def names(self) -> tuple[str, ...]:
        return tab_parts()[self.name].fields

    def inputs(self) -> list[gr.components.Component]:
        return self.fields.inputs(self.names)

    def buttons(self) -> list[gr.Button]:
        return [self.generate, self.interrupt, self.skip]


def _prompts(tab: str, d: Request) -> tuple[gr.Textbox, gr.Textbox]:
    prompt = gr.Textbox(
        label="Prompt", lines=3, elem_id=f"{tab}-prompt", value=d.prompt,
        placeholder="Prompt (Ctrl+Enter to generate)",
    )  # fmt: skip
    negative = gr.Textbox(
        label="Negative prompt", lines=2, value=d.negative_prompt, elem_id=f"{tab}-negative"
    )
    return prompt, negative


def _actions(tab: str) -> tuple[gr.Button, gr.Button, gr.Button, gr.Markdown]:
    generate = gr.Button("Generate", variant="primary", size="lg", elem_id=f"{tab}-generate")
    with gr.Row():
        interrupt = gr.Button("Interrupt", interactive=False, elem_id=f"{tab}-interrupt")
        skip = gr.Button("Skip", interactive=False, elem_id=f"{tab}-skip")
    status = gr.Markdown("", elem_id=f"{tab}-status", elem_classes=["status"])
    return generate, interrupt, skip, status


def _settings(tab: str, d: Request, limits: Limits, family: str) -> tuple[dict, dict]:
    """The settings column: (inputs by field, the size and seed buttons by name)."""
    c: dict[str, gr.components.Component] = {}
    b: dict = {}
    with gr.Row():
        c["sampler"] = gr.Dropdown(
            [(label, key) for key, (label, _, _) in SAMPLERS.items()],
            value=d.sampler, label="Sampling method", elem_id=f"{tab}-sampler",
        )  # fmt: skip
        c["steps"] = FieldSlider(0, limits.max_steps, d.steps, step=1, label="Sampling steps",
                            elem_id=f"{tab}-steps")  # fmt: skip
    with gr.Row(equal_height=True):
        with gr.Column(scale=6, min_width=200):
            c["width"] = FieldSlider(0, limits.max_side, d.width, step=8, label="Width",
                                elem_id=f"{tab}-width")  # fmt: skip
            c["height"] = FieldSlider(0, limits.max_side, d.height, step=8, label="Height",
                                 elem_id=f"{tab}-height")  # fmt: skip
        with gr.Column(scale=1, min_width=70):
            b["swap"] = gr.Button("⇅", size="sm", elem_id=f"{tab}-swap")
            b["presets"] = [
                gr.Button(f"{w}×{h}", size="sm", elem_id=f"{tab}-size-{i}",
                          visible=w <= limits.max_side and h <= limits.max_side)
                for i, (w, h) in enumerate(SIZE_PRESETS[family])
            ]  # fmt: skip
    with gr.Row():
        c["batch_count"] = FieldSlider(0, limits.max_batch_count, d.batch_count, step=1,
                                  label="Batch count", elem_id=f"{tab}-batch-count")  # fmt: skip
        c["batch_size"] = FieldSlider(0, limits.max_batch_size, d.batch_size, step=1,
                                 label="Batch size", elem_id=f"{tab}-batch-size")  # fmt: skip
    c["cfg_scale"] = FieldSlider(0, 30, d.cfg_scale, step=0.5, label="CFG scale",
                            elem_id=f"{tab}-cfg")  # fmt: skip
    with gr.Row(equal_height=True):
        c["seed"] = gr.Number(d.seed, precision=0, label="Seed (-1 = random)",
                              elem_id=f"{tab}-seed", scale=4)  # fmt: skip
        b["random_seed"] = gr.Button("🎲", size="sm", scale=0, min_width=44,
                                     elem_id=f"{tab}-random-seed")  # fmt: skip
        b["reuse_seed"] = gr.Button("♻", size="sm", scale=0, min_width=44,
                                    elem_id=f"{tab}-reuse-seed")  # fmt: skip
    m = limits.max_lora_scale
    c["lora_scale"] = FieldSlider(-m, m, d.lora_scale, step=0.05, label="LoRA strength",
                             elem_id=f"{tab}-lora-scale")  # fmt: skip
    # A1111's setting, which PNG Info overrides; None: the base's model.clip_skip
    c["clip_skip"] = gr.Radio([1, 2], value=d.clip_skip, label="Clip skip",
                              elem_id=f"{tab}-clip-skip", info=CLIP_SKIP_INFO)  # fmt: skip
    return c, b


def preset_updates(family: str, limits: Limits, tabs: int) -> list:
    """The size buttons of every tab relabelled for a base of `family` (the app's base switch):
    each sets the size its label says; one over limits.max_side is hidden."""
    one = [gr.update(value=f"{w}×{h}", visible=w <= limits.max_side and h <= limits.max_side)
           for w, h in SIZE_PRESETS[family]]  # fmt: skip
    return one * tabs


def _results(tab: str, sends: tuple[str, ...]) -> tuple:
    gallery = gr.Gallery(
        label="Images", elem_id=f"{tab}-gallery", columns=4, height=270, interactive=False,
        object_fit="scale-down", preview=False, elem_classes=["studio-gallery"],
        buttons=["download", "download_all", "fullscreen"],
    )  # fmt: skip
    with gr.Row():
        labels = {"img2img": "Send to image-to-image", "txt2img": "Send to text-to-image",
                  "loopback": "Loopback"}  # fmt: skip
        buttons = {t: gr.Button(labels[t], size="sm", elem_id=f"{tab}-send-to-{t}") for t in sends}
    live = gr.Image(label="Live preview", elem_id=f"{tab}-live-preview", interactive=False,
                    height=160, buttons=[])  # fmt: skip
    info = gr.Textbox(label="Generation parameters", lines=3, elem_id=f"{tab}-info")
    with gr.Accordion("PNG files (with parameters)", open=False):
        files = gr.File(label="PNG files", file_count="multiple", elem_id=f"{tab}-files")
    return gallery, buttons, info, files, live


def build_tab(
    tab: str, d: Request, limits: Limits, control_types: list[str] = (), family: str = "sd1"
) -> Tab:
    """One tab (inside a gr.Tab): prompts and actions on top, settings left (its mode's own
    inputs first, `gui_modes`), results right."""
    part = tab_parts()[tab]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            prompt, negative = _prompts(tab, d)
        with gr.Column(scale=1, min_width=200):
            generate, interrupt, skip, status = _actions(tab)
            effective = gr.Markdown(elem_id=f"{tab}-effective", elem_classes=["effective"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            own, preview = part.build(tab, d, list(control_types)) if part.build else ({}, None)
            c, b = _settings(tab, d, limits, family)
            with gr.Accordion("Prompt prefixes (added before your prompts)", open=False,
                              elem_id=f"{tab}-prefixes"):  # fmt: skip
                c["positive_prefix"] = gr.Textbox(label="Positive prefix", value=d.positive_prefix,
                                                  elem_id=f"{tab}-positive-prefix")  # fmt: skip
                c["negative_prefix"] = gr.Textbox(label="Negative prefix", lines=3,
                                                  value=d.negative_prefix,
                                                  elem_id=f"{tab}-negative-prefix")  # fmt: skip
        with gr.Column(scale=1):
            gallery, buttons, info, files, live = _results(tab, part.sends)
    f = Fields(prompt=prompt, negative_prompt=negative, **own, **c)
    return Tab(
        tab, f, generate, interrupt, skip, status, effective, b["random_seed"], b["reuse_seed"],
        b["swap"], b["presets"], gallery, info, files, buttons, gr.State([]), gr.State(0),
        preview, live, gr.State(None),
    )  # fmt: skip


# Ctrl+Enter (Cmd+Enter) clicks the Generate button of the tab on screen, as in A1111. What is
# typed into a slider's number box is recorded as the box loses focus, before Gradio's own blur
# handler clamps it to the slider's range (read by the slider's change event, `gui_checks`).
PAGE_JS = """() => {
  window.kshdTyped = {};
  document.addEventListener('blur', (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || box.type !== 'number') return;
    const block = box.closest('.block[id]');
    if (block) window.kshdTyped[block.id] = box.value;
  }, true);
  document.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.key !== 'Enter') return;
    const go = [...document.querySelectorAll('button[id$="-generate"]')]
      .find((b) => b.offsetParent !== null && !b.disabled);
    if (go) { e.preventDefault(); go.click(); }
  });
}"""

# Images whole and at their real size when small (Gradio stretches a lone image to a square the
# gallery's width, scrolled, and crops with `cover`).
PAGE_CSS = """
.studio-gallery .grid-wrap { padding-top: 2.2em; }
.studio-gallery .thumbnail-item { aspect-ratio: auto; width: auto; height: auto; min-width: 180px;
  flex-direction: column; }
.studio-gallery .caption-label { position: static; max-width: none; }
.studio-gallery .thumbnail-item img { width: auto; height: auto; max-width: 100%; max-height: 220px;
  object-fit: scale-down; }
.status { min-height: 2.5em; font-size: 0.9em; }
.status-error { color: var(--error-text-color, #b91c1c); }
.effective { font-size: 0.85em; color: var(--body-text-color-subdued); }
#model-bar { font-size: 0.9em; }
.field-error [data-testid="block-info"], .field-error .info-text,
.field-error [data-testid="block-label"] { color: var(--error-text-color, #b91c1c); }
"""
