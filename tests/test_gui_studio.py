"""The studio as an AUTOMATIC1111 user meets it (issue 16), in Debian's Chromium at 1366x768:
what a Generate click changes is on screen, Generate is locked while its job runs, Interrupt keeps
finished images, send buttons carry every parameter, seeds and sizes have their buttons,
Ctrl+Enter generates; and the new endpoints through gradio_client."""

from __future__ import annotations

import re
import threading

import pytest

from .helpers.studio import STEPS, free_port, gui_cfg, open_page, wait_for_images

pytestmark = pytest.mark.slow
VIEW = (1366, 768)


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    from kshd.drawing.gui import serve

    outputs = tmp_path_factory.mktemp("studio_outputs")
    port = free_port()
    ui, engine = serve(gui_cfg(tiny_models, random_lora, outputs, port), block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "engine": engine}
    with engine.lock:
        ui.close()


def _box(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")


def _in_view(page, selector: str) -> bool:
    box = _box(page, selector)
    return box["height"] > 0 and box["top"] >= 0 and box["bottom"] <= VIEW[1]


def _value(page, selector: str) -> str:
    return page.input_value(f"{selector} input, {selector} textarea >> nth=0")


def test_what_generate_changes_is_on_screen_and_small_images_stay_whole(browser, server):
    page, failed = open_page(browser, server, VIEW)
    page.fill("#txt2img-prompt textarea", "an anime girl")
    page.click("#txt2img-generate")
    # while the job runs: Generate is locked and says so, Interrupt and Skip are offered
    page.wait_for_selector("#txt2img-generate[disabled]", timeout=30_000)
    assert "Generating" in page.inner_text("#txt2img-generate")
    assert page.is_enabled("#txt2img-interrupt") and page.is_enabled("#txt2img-skip")
    assert wait_for_images(page, "txt2img") == [128]
    page.wait_for_selector("#txt2img-generate:not([disabled])", timeout=30_000)
    assert not page.is_enabled("#txt2img-interrupt")
    for part in ("#txt2img-gallery", "#txt2img-status", "#txt2img-send-to-img2img"):
        assert _in_view(page, part), (part, _box(page, part))
    assert page.evaluate("window.scrollY") == 0  # nothing scrolled to get there
    img = page.eval_on_selector(
        "#txt2img-gallery img",
        "e => [e.getBoundingClientRect().width, e.naturalWidth, getComputedStyle(e).objectFit]",
    )
    assert img == [128, 128, "scale-down"], img  # its real size, whole: never cropped
    seed = re.search(r"Seed: (\d+)", _value(page, "#txt2img-info")).group(1)
    caption = page.eval_on_selector(
        "#txt2img-gallery .caption-label", "e => [e.innerText, e.scrollWidth <= e.clientWidth]"
    )
    assert caption == [f"seed {seed}", True], caption  # the seed caption whole
    assert re.search(r"1 image in \d+\.\d s", page.inner_text("#txt2img-status"))
    assert "Model: sd" in page.inner_text("#model-bar") and "LoRA:" in page.inner_text("#model-bar")
    assert not failed


def test_interrupt_keeps_the_finished_images(browser, server):
    page, _ = open_page(browser, server, VIEW)
    page.fill("#txt2img-prompt textarea", "a boy")
    page.fill("#txt2img-batch-count input[type=number]", "3")
    page.press("#txt2img-batch-count input[type=number]", "Enter")
    page.click("#txt2img-generate")
    total = 3 * STEPS
    page.wait_for_function(  # the second image is being drawn
        """([sel, total, after]) => {
            const m = (document.querySelector(sel) || {}).innerText?.match(/(\\d+)\\/(\\d+) steps/);
            return m && +m[2] === total && +m[1] > after;
        }""",
        arg=["#txt2img-gallery", total, STEPS],
        timeout=90_000,
    )
    page.click("#txt2img-interrupt")
    page.wait_for_selector("#txt2img-generate:not([disabled])", timeout=90_000)
    shown = wait_for_images(page, "txt2img")
    info = _value(page, "#txt2img-info")
    assert 1 <= len(shown) < 3, shown  # the first kept, the one in flight and the third not drawn
    assert len(re.findall(r"Seed: \d+", info)) == len(shown)


def test_send_carries_the_picture_and_every_parameter_and_seeds_have_buttons(browser, server):
    page, _ = open_page(browser, server, VIEW)
    typed = {"#txt2img-prompt": "a boy in a park", "#txt2img-negative": "blurry"}
    for selector, text in typed.items():
        page.fill(f"{selector} textarea", text)
    numbers = {"steps": "5", "width": "64", "height": "96", "seed": "1234", "cfg": "6"}
    for name, value in numbers.items():
        field = f"#txt2img-{name} input[type=number]" if name != "seed" else "#txt2img-seed input"
        page.fill(field, value)
        page.press(field, "Tab")
    page.click("#txt2img-generate")
    wait_for_images(page, "txt2img")
    page.click("#txt2img-send-to-img2img")
    page.wait_for_selector("#img2img-image img", timeout=30_000)
    assert page.input_value("#img2img-prompt textarea") == "a boy in a park"
    assert page.input_value("#img2img-negative textarea") == "blurry"
    for name, value in numbers.items():
        field = f"#img2img-{name} input[type=number]" if name != "seed" else "#img2img-seed input"
        assert page.input_value(field) == value, name
    # 🎲 and ♻ (on the image-to-image tab's own result)
    page.click("#img2img-random-seed")
    page.wait_for_function("() => document.querySelector('#img2img-seed input').value === '-1'")
    page.click("#img2img-generate")
    wait_for_images(page, "img2img")
    page.wait_for_selector("#img2img-generate:not([disabled])", timeout=60_000)
    drawn = re.search(r"Seed: (\d+)", _value(page, "#img2img-info")).group(1)
    page.click("#img2img-reuse-seed")
    page.wait_for_function(
        "s => document.querySelector('#img2img-seed input').value === s", arg=drawn
    )
    # loopback: the result becomes the picture; send to text-to-image carries the parameters
    before = page.get_attribute("#img2img-image img", "src")
    page.click("#img2img-send-to-loopback")
    page.wait_for_function(
        "old => document.querySelector('#img2img-image img')?.src !== old", arg=before
    )
    page.click("#img2img-send-to-txt2img")
    page.wait_for_function(
        "s => document.querySelector('#txt2img-seed input').value === s", arg=drawn
    )
    assert page.input_value("#txt2img-height input[type=number]") == "96"


def test_size_presets_swap_and_ctrl_enter(browser, server):
    page, _ = open_page(browser, server, VIEW)
    page.click("#txt2img-size-512x768")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-height input[type=number]').value === '768'"
    )
    assert page.input_value("#txt2img-width input[type=number]") == "512"
    page.click("#txt2img-swap")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-width input[type=number]').value === '768'"
    )
    assert page.input_value("#txt2img-height input[type=number]") == "512"
    page.click("#txt2img-size-512x512")
    page.click("#txt2img-prefixes button")  # the accordion opens
    page.fill("#txt2img-positive-prefix textarea", "masterpiece, best quality,")
    page.fill("#txt2img-prompt textarea", "a girl")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-effective').innerText.includes('3 and')"
    )
    page.click("#txt2img-effective summary")
    assert "masterpiece, best quality, a girl" in page.inner_text("#txt2img-effective")
    for name in ("width", "height"):  # small again, then drawn by the keyboard
        page.fill(f"#txt2img-{name} input[type=number]", "64")
        page.press(f"#txt2img-{name} input[type=number]", "Tab")
    page.focus("#txt2img-prompt textarea")
    page.keyboard.press("Control+Enter")
    assert wait_for_images(page, "txt2img") == [64]


def test_client_interrupt_and_skip_endpoints(server, monkeypatch):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/txt2img", "/img2img", "/txt2img_interrupt", "/txt2img_skip"} <= names
    assert client.predict(api_name="/txt2img_interrupt") == "interrupt: nothing of yours is drawing"
    engine, drawing = server["engine"], threading.Event()
    generate = engine.generate

    def signalling(req, progress=None, **kw):  # says when the second batch is being drawn
        def seen(done, total):
            progress(done, total)
            if done > req.steps:
                drawing.set()

        return generate(req, seen, **kw)

    monkeypatch.setattr(engine, "generate", signalling)
    job = client.submit(prompt="a girl", steps=4, seed=9, width=64, height=64, batch_count=3,
                        batch_size=1, api_name="/txt2img")  # fmt: skip
    assert drawing.wait(60)
    assert client.predict(api_name="/txt2img_skip") == "skip: asked"
    gallery, info, _ = job.result(timeout=120)
    assert [g["caption"] for g in gallery] == ["seed 9", "seed 11"]  # the second one skipped
