"""The studio (kshd gui) under test: a config for the tiny model, a free port, and the page in
Debian's Chromium, with a record of everything a gallery showed (progress, queue position)."""

from __future__ import annotations

import re
import socket

from ..conftest import ROOT

STEPS = 12  # long enough on the tiny model (~0.3 s a step at 128 px) to watch the progress


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gui_cfg(tiny_models, lora, outputs, port, *overrides: str):
    from kshd.config.compose import compose_conf

    return compose_conf(
        [
            "+experiment=demo",
            f"model.pretrained={tiny_models['sd']}",
            f"generate.lora={lora}",
            f"generate.outputs_dir={outputs}",
            f"generate.gui.port={port}",
            f"generate.steps={STEPS}",
            "generate.negative_prefix=''",
            "generate.device=cpu",
            "generate.limits.max_upload_pixels=4000000",
            # nothing of this checkout's own runs in the model bar's LoRA list
            f"generate.gui.checkpoints_dir={outputs}/checkpoints",
            f"generate.gui.eval_metrics={outputs}/metrics.json",
            f"generate.gui.lora_dirs=[{outputs}/loras]",
            f"generate.gui.models=[{tiny_models['sdxl']}]",  # a base of the other family
            *overrides,
        ],
        conf_dir=ROOT / "conf",
    )


def studio_server(tiny_models, random_lora, outputs):
    """The studio on the tiny SD with the random LoRA, a training checkpoint of it (marked best
    by a metrics file) in `outputs`: yields what the tests reach (url, engine, ui, paths)."""
    from safetensors.torch import load_file, save_file

    from kshd.adapters.files import DIFFUSERS_FILE
    from kshd.drawing.gui import serve

    checkpoint = outputs / "checkpoints" / "checkpoint-8"  # the random LoRA's weights, raw
    checkpoint.mkdir(parents=True)
    save_file(load_file(str(random_lora / DIFFUSERS_FILE)), str(checkpoint / "lora.safetensors"))
    (checkpoint / "state.json").write_text("{}", encoding="utf-8")
    (outputs / "metrics.json").write_text('{"best_checkpoint": {"step": 8}}', encoding="utf-8")
    port = free_port()
    ui, engine = serve(gui_cfg(tiny_models, random_lora, outputs, port), block=False)
    base = str(tiny_models["sd"])
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "engine": engine,
           "lora": random_lora, "checkpoint": checkpoint, "base": base, "ui": ui}  # fmt: skip
    with engine.lock:
        ui.close()


def open_page(browser, server, size: tuple[int, int] = (1366, 768)):
    """The studio in a new page of `size` (a laptop's screen, as the issue measured), with the
    list of requests that failed."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    failed = []
    # the event stream of a finished job is closed by the page: not a failure
    page.on("requestfailed", lambda r: "/queue/data" in r.url or failed.append(r.url))
    page.on("response", lambda r: r.status < 400 or failed.append(f"{r.status} {r.url}"))
    page.goto(server["url"])
    page.wait_for_selector("#txt2img-prompt textarea")
    return page, failed


def wait_for_images(page, tab: str, timeout: float = 90) -> list[int]:
    """The widths of the tab's gallery images, once every one of them has loaded (an <img>
    is in the page before its file has arrived)."""
    page.wait_for_function(
        """tab => { const shown = [...document.querySelectorAll('#' + tab + '-gallery img')];
          return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=tab,
        timeout=timeout * 1000,
    )
    return page.eval_on_selector_all(f"#{tab}-gallery img", "els => els.map(e => e.naturalWidth)")


_RECORD = """([tab, part]) => {
  const seen = [];
  (window.__seen = window.__seen || {})[tab] = seen;
  new MutationObserver(() => {  // the tab's gallery may not be rendered yet: watch the page
    const box = document.querySelector('#' + tab + '-' + part);
    if (box) seen.push(box.innerText);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def record(page, tab: str, part: str = "gallery") -> None:
    """Record every text the tab's `part` (its gallery, or the status beside Generate) shows
    from now on (progress, queue position).

    A MutationObserver sees each change the page renders, so no short-lived text is missed by
    polling at the wrong moment, however slow the machine.
    """
    page.evaluate(_RECORD, [tab, part])


def recorded(page, tab: str) -> str:
    return "\n".join(page.evaluate("tab => window.__seen[tab]", tab))


def watch_progress(page, tab: str) -> list[str]:
    """Step counts the page showed while drawing, once the image has appeared."""
    wait_for_images(page, tab)
    return re.findall(rf"\d+/{STEPS} steps", recorded(page, tab))
