"""docs/studio-txt2img.png, studio-img2img.png, studio-sketch.png, studio-xyz.png and
studio-dataset.png: the studio at 1366x768 as a user sees it after drawing, with the demo's world
model, its line-art ControlNet, the LoRA and checkpoints of the last `make demo`, and its captions.

Drives the real GUI in Debian's Chromium through Playwright (the test extras), as the GUI tests
do; `fonts-noto-color-emoji` draws the seed buttons' 🎲 and ♻ and `fonts-noto-cjk` the
samples' Korean file names.

    python -m kshd_world.screenshots [--lora models/lora] [--out docs]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
VIEW = {"width": 1366, "height": 768}
PROMPT = "an anime girl, long blonde hair, green eyes, school uniform, white background, drawn by KSH drawing style"  # noqa: E501
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settled(page, tab: str) -> None:
    """The four images shown, the buttons back, nothing focused, the page at its top."""
    page.wait_for_selector(f"#{tab}-gallery img >> nth=3", timeout=120_000)
    page.wait_for_selector(f"#{tab}-interrupt[disabled]", timeout=60_000)
    page.wait_for_selector(f"#{tab}-status >> text=images in", timeout=60_000)
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    page.wait_for_function("() => window.scrollY === 0")


def _sketch(page, path: Path) -> None:
    """A held-out character's lines as a user's sketch (black on white), drawn in four with
    its own description, as a user describes what they sketched."""
    from PIL import ImageOps

    from kshd.drawing.control_images import control_image
    from kshd_world.world import character, draw

    who = character(10_007)
    lines = control_image(draw(who, "plain", (128, 128)), "lineart_standard")
    ImageOps.invert(lines.point(lambda v: 255 if v >= 64 else 0)).save(path)
    page.click("button[role=tab]:has-text('Sketch to style')")
    page.wait_for_selector("#sketch-sketch canvas")
    page.set_input_files("#sketch-sketch input[type=file]", str(path))
    page.wait_for_selector("#sketch-control-preview img", timeout=60_000)
    page.fill("#sketch-prompt textarea", f"{who.caption()}, drawn by KSH drawing style")
    page.fill("#sketch-batch-size input[type=number]", "4")
    page.press("#sketch-batch-size input[type=number]", "Tab")
    page.click("#sketch-generate")
    _settled(page, "sketch")


def _xyz(page) -> None:
    """The artist's way to pick an epoch by eye: four seeds across, the LoRA list (📒: the
    training checkpoints, the trained LoRA, none) down, with the Text to image tab's prompt."""
    page.click("button[role=tab]:has-text('X/Y/Z plot')")
    page.fill("#xyz-x-values textarea", "10, 11, 12, 13")
    page.click("#xyz-y-type input")
    page.get_by_role("option", name="LoRA", exact=True).click()
    page.click("#xyz-y-fill")
    page.wait_for_function("() => document.querySelector('#xyz-y-values textarea').value")
    page.click("#xyz-generate")
    page.wait_for_selector("#xyz-status >> text=cells in", timeout=600_000)
    page.wait_for_selector("#xyz-gallery img", timeout=60_000)
    page.evaluate("() => { document.activeElement?.blur(); "
                  "document.querySelector('#xyz-y-type').scrollIntoView(); }")  # fmt: skip


def _dataset(page) -> None:
    """The demo's captions as review shows them, one drawing picked for editing."""
    page.click("button[role=tab]:has-text('Dataset')")
    page.wait_for_selector("#dataset-gallery img", timeout=60_000)
    page.click("#dataset-table [role=gridcell]:has-text('소녀_01.png')")
    page.wait_for_function("() => document.querySelector('#dataset-caption textarea').value")
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")


def shoot(lora: str, out: Path) -> list[Path]:
    """Draw four in text-to-image, send the first to image-to-image and redraw it; a screenshot
    of each tab."""
    from playwright.sync_api import sync_playwright

    from kshd.config.compose import compose_conf
    from kshd.drawing.gui import serve

    port, outputs = _port(), tempfile.mkdtemp(prefix="studio-")
    cfg = compose_conf(
        ["+experiment=demo", f"generate.lora={lora}", f"generate.outputs_dir={outputs}",
         f"generate.gui.port={port}", "generate.device=cpu"],
    )  # fmt: skip
    ui, engine = serve(cfg, block=False)
    names = ("txt2img", "img2img", "sketch", "xyz", "dataset")
    shots = [out / f"studio-{name}.png" for name in names]
    try:
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport=VIEW)
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#txt2img-prompt textarea", PROMPT)
            page.fill("#txt2img-seed input", "10")
            page.fill("#txt2img-batch-size input[type=number]", "4")
            page.press("#txt2img-batch-size input[type=number]", "Tab")
            page.click("#txt2img-generate")
            _settled(page, "txt2img")
            page.screenshot(path=str(shots[0]))
            page.click("#txt2img-send-to-img2img")
            page.wait_for_selector("#img2img-image img", timeout=30_000)
            page.click("#img2img-generate")
            _settled(page, "img2img")
            page.screenshot(path=str(shots[1]))
            _sketch(page, Path(outputs) / "sketch.png")
            page.screenshot(path=str(shots[2]))
            _xyz(page)
            page.screenshot(path=str(shots[3]))
            _dataset(page)
            page.screenshot(path=str(shots[4]))
            browser.close()
    finally:
        with engine.lock:
            ui.close()
        shutil.rmtree(outputs, ignore_errors=True)
    return shots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kshd_world.screenshots", description=__doc__)
    p.add_argument("--lora", default="models/lora", help="the LoRA drawn with (make demo's)")
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.lora).exists():
        p.error(f"no LoRA at {args.lora}: run `make demo` first")
    for shot in shoot(args.lora, args.out):
        log.info("wrote %s", shot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
