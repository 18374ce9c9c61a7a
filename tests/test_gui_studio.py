"""The studio as an AUTOMATIC1111 user meets it, in Debian's Chromium at 1366x768:
what a Generate click changes is on screen, Generate is locked while its job runs, Interrupt keeps
finished images, send buttons carry every parameter, seeds and sizes have their buttons,
Ctrl+Enter generates; the LoRA chooser, PNG Info, History and errors beside their fields. Its
endpoints through gradio_client: tests/test_gui_studio_api.py."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from kshd.adapters.files import DIFFUSERS_FILE

from .helpers.studio import STEPS, open_page, studio_server, wait_for_images

pytestmark = pytest.mark.slow
VIEW = (1366, 768)


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    yield from studio_server(tiny_models, random_lora, tmp_path_factory.mktemp("studio_outputs"))


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


def test_interrupt_keeps_the_finished_images(browser, server, monkeypatch):
    """Interrupt clicked while the second image draws (the engine held there until the click
    reaches it): the first image kept, the second and third not drawn."""
    import threading

    engine, asked, drawing = server["engine"], threading.Event(), threading.Event()
    generate, stop = engine.generate, engine.stop

    def holding(req, progress=None, **kw):
        def step(done, total):
            progress(done, total)
            if done == STEPS + 1:  # the second image's first step
                drawing.set()
                assert asked.wait(60)

        return generate(req, step, **kw)

    def stopping(how, owner=None):
        said = stop(how, owner=owner)
        asked.set()
        return said

    monkeypatch.setattr(engine, "generate", holding)
    monkeypatch.setattr(engine, "stop", stopping)
    page, _ = open_page(browser, server, VIEW)
    page.fill("#txt2img-prompt textarea", "a boy")
    page.fill("#txt2img-batch-count input[type=number]", "3")
    page.press("#txt2img-batch-count input[type=number]", "Enter")
    page.click("#txt2img-generate")
    assert drawing.wait(90)
    page.click("#txt2img-interrupt")
    page.wait_for_selector("#txt2img-generate:not([disabled])", timeout=90_000)
    shown = wait_for_images(page, "txt2img")
    info = _value(page, "#txt2img-info")
    assert len(shown) == 1, shown  # the first kept, the one in flight and the third not drawn
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
    page.wait_for_function("() => document.querySelector('#img2img-seed input')?.value === '-1'")
    page.click("#img2img-generate")
    wait_for_images(page, "img2img")
    page.wait_for_selector("#img2img-generate:not([disabled])", timeout=60_000)
    drawn = re.search(r"Seed: (\d+)", _value(page, "#img2img-info")).group(1)
    page.click("#img2img-reuse-seed")
    page.wait_for_function(
        "s => document.querySelector('#img2img-seed input')?.value === s", arg=drawn
    )
    # loopback: the result becomes the picture; send to text-to-image carries the parameters
    before = page.get_attribute("#img2img-image img", "src")
    page.click("#img2img-send-to-loopback")
    page.wait_for_function(
        "old => document.querySelector('#img2img-image img')?.src !== old", arg=before
    )
    page.click("#img2img-send-to-txt2img")
    page.wait_for_function(
        "s => document.querySelector('#txt2img-seed input')?.value === s", arg=drawn
    )
    assert page.input_value("#txt2img-height input[type=number]") == "96"


def test_size_presets_swap_and_ctrl_enter(browser, server):
    page, _ = open_page(browser, server, VIEW)
    page.click("#txt2img-size-1")  # 512×768
    page.wait_for_function(
        "() => document.querySelector('#txt2img-height input[type=number]')?.value === '768'"
    )
    assert page.input_value("#txt2img-width input[type=number]") == "512"
    page.click("#txt2img-swap")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-width input[type=number]')?.value === '768'"
    )
    assert page.input_value("#txt2img-height input[type=number]") == "512"
    page.click("#txt2img-size-0")  # 512×512
    page.click("#txt2img-prefixes button")  # the accordion opens
    page.fill("#txt2img-positive-prefix textarea", "masterpiece, best quality,")
    page.fill("#txt2img-prompt textarea", "a girl")
    page.wait_for_function(  # both changes drawn (closed, the full prompts are in the text)
        "() => document.querySelector('#txt2img-effective')?.textContent"
        ".includes('masterpiece, best quality, a girl')"
    )
    page.click("#txt2img-effective summary")
    assert "masterpiece, best quality, a girl" in page.inner_text("#txt2img-effective")
    for name in ("width", "height"):  # small again, then drawn by the keyboard
        page.fill(f"#txt2img-{name} input[type=number]", "64")
        page.press(f"#txt2img-{name} input[type=number]", "Tab")
    page.focus("#txt2img-prompt textarea")
    page.keyboard.press("Control+Enter")
    assert wait_for_images(page, "txt2img") == [64]


def test_the_lora_chooser_lists_checkpoints_and_refreshes(browser, server):
    page, _ = open_page(browser, server, VIEW)
    assert "LoRA:" in page.inner_text("#model-status")
    added = server["outputs"] / "loras" / "watercolor.safetensors"
    added.parent.mkdir(exist_ok=True)
    added.write_bytes((server["lora"] / DIFFUSERS_FILE).read_bytes())
    with page.expect_response(lambda r: "/run/predict" in r.url):  # the list read again
        page.click("#lora-refresh")
    page.click("#lora-choice input")
    names = page.eval_on_selector_all("[role=option]", "els => els.map(e => e.innerText.trim())")
    assert "checkpoint 8 (best)" in names and "watercolor" in names, names
    try:
        page.get_by_role("option", name="checkpoint 8 (best)").click()
        page.wait_for_function(
            "() => document.querySelector('#model-status')?.innerText.includes('checkpoint-8')",
            timeout=60_000,
        )
    finally:
        server["engine"].set_lora(str(server["lora"]))


def _draw_txt2img(page, prompt: str, **numbers: str) -> None:
    """The prompt and the number fields typed (Tab commits each), Generate clicked; back once
    the images show and Generate is on again."""
    page.fill("#txt2img-prompt textarea", prompt)
    for name, value in numbers.items():
        field = "#txt2img-seed input" if name == "seed" else f"#txt2img-{name} input[type=number]"
        page.fill(field, value)
        page.press(field, "Tab")
    page.click("#txt2img-generate")
    wait_for_images(page, "txt2img")
    page.wait_for_selector("#txt2img-generate:not([disabled])", timeout=60_000)


def _newest(outputs, seed: int):
    return max(outputs.glob(f"txt2img/*/*-{seed}.png"), key=lambda p: p.stat().st_mtime)


def test_png_info_round_trip_and_an_a1111_file(browser, server, tmp_path):
    page, _ = open_page(browser, server, VIEW)
    _draw_txt2img(page, "a girl with a hat", seed="777", steps="4", width="64", height="64")
    drawn = _value(page, "#txt2img-info")
    page.fill("#txt2img-prompt textarea", "something else")
    page.fill("#txt2img-seed input", "1")
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo-image input[type=file]", str(_newest(server["outputs"], 777)))
    page.wait_for_function("() => document.querySelector('#pnginfo-text textarea')?.value")
    assert page.input_value("#pnginfo-text textarea") == drawn
    page.click("#pnginfo-send-to-txt2img")
    page.wait_for_function("() => document.querySelector('#txt2img-seed input')?.value === '777'")
    # the LoRA in use comes back as A1111 writes it, a tag carrying its weight (the strength
    # field 0), so that A1111 draws the same from the file
    tag = f"<lora:{server['engine'].lora_name}:1>"
    assert page.input_value("#txt2img-prompt textarea") == f"a girl with a hat {tag}"
    assert page.input_value("#txt2img-lora-scale input[type=number]") == "0"
    shown = page.get_attribute("#txt2img-gallery img", "src")
    page.click("#txt2img-generate")  # drawn again from the file's parameters: the same text
    page.wait_for_function(
        "old => document.querySelector('#txt2img-gallery img')?.src !== old"
        " && !document.querySelector('#txt2img-generate').disabled",
        arg=shown,
        timeout=60_000,
    )
    assert len(list(server["outputs"].glob("txt2img/*/*-777.png"))) == 2
    assert _value(page, "#txt2img-info") == drawn
    a1111 = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", "1girl\nSteps: 20, Sampler: Euler a, Seed: 5, Clip skip: 2, "
                                "Hires steps: 10")  # fmt: skip
    Image.new("RGB", (64, 64)).save(a1111, pnginfo=info)
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo-image input[type=file]", str(a1111))
    page.wait_for_selector("#pnginfo-note >> text=Not used here: Hires steps.", timeout=30_000)
    assert "Clip skip" not in page.inner_text("#pnginfo-note")  # used: the tab draws at 2
    page.click("#pnginfo-send-to-txt2img")
    page.wait_for_function("() => document.querySelector('#txt2img-seed input')?.value === '5'")
    assert page.is_checked("#txt2img-clip-skip input[type=radio] >> nth=1")  # choices 1, 2


def test_history_lists_earlier_drawings_newest_first_and_sends_them(browser, server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    client.predict(prompt="a boy at the sea", seed=4321, steps=3, width=64, height=64,
                   batch_size=1, api_name="/txt2img")  # fmt: skip
    page, _ = open_page(browser, server, VIEW)
    page.click("button[role=tab]:has-text('History')")
    page.wait_for_selector("#history-gallery img", timeout=30_000)
    captions = page.eval_on_selector_all(
        "#history-gallery .caption-label", "els => els.map(e => e.innerText)"
    )
    assert captions[0].endswith("seed 4321"), captions[:3]  # the newest first
    assert "page 1 of" in page.inner_text("#history-where")
    page.click("#history-gallery img >> nth=0")
    page.wait_for_function(
        "() => document.querySelector('#history-text textarea')?.value.includes('Seed: 4321')"
    )
    page.click("#history-send-to-img2img")
    page.wait_for_selector("#img2img-image img", timeout=30_000)
    tag = f"<lora:{server['engine'].lora_name}:1>"  # the LoRA in use, as A1111 writes it
    assert page.input_value("#img2img-prompt textarea") == f"a boy at the sea {tag}"
    assert page.input_value("#img2img-seed input") == "4321"


def _type(page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.press(selector, "Tab")  # the box loses focus, as a user's tab or click away


def test_errors_stand_beside_their_fields_until_that_field_changes(
    browser, server, tmp_path, capfd
):
    page, _ = open_page(browser, server, VIEW)
    page.fill("#txt2img-prompt textarea", "a girl")
    steps, width = "#txt2img-steps input[type=number]", "#txt2img-width input[type=number]"
    _type(page, steps, "0")
    _type(page, width, "100")
    page.click("#txt2img-generate")  # both named at once, beside their fields, by their labels
    said = "Sampling steps: 0 must be a whole number from 1 to 150"
    page.wait_for_selector(f"#txt2img-steps.field-error >> text={said}", timeout=30_000)
    wide = "Width: 100 is not a multiple of 8 (e.g. 96)"
    page.wait_for_selector(f"#txt2img-width.field-error >> text={wide}", timeout=30_000)
    assert page.input_value(steps) == "0"  # never silently changed
    assert page.is_enabled("#txt2img-generate") and not page.query_selector("#txt2img-gallery img")
    page.click("#txt2img-random-seed")  # another event of the page: the messages stay
    page.fill("#txt2img-prompt textarea", "a girl, smiling")
    page.wait_for_function(
        "document.querySelector('#txt2img-effective')?.textContent.includes('smiling')"
    )
    _type(page, steps, "5")  # the field changed: its message goes, the other's stays
    page.wait_for_selector(f"#txt2img-steps >> text={said}", state="detached", timeout=30_000)
    assert wide in page.inner_text("#txt2img-width")
    assert not page.query_selector("#txt2img-steps.field-error")
    # a number beyond the slider is clamped by the browser as the box loses focus: said so
    _type(page, steps, "200")
    clamped = "Sampling steps: 200 must be a whole number from 1 to 150; the box was set to 150"
    page.wait_for_selector(f"#txt2img-steps.field-error >> text={clamped}", timeout=30_000)
    assert page.input_value(steps) == "150"
    # a picture is checked when it is uploaded, not at Generate
    page.click("button[role=tab]:has-text('Image to image')")
    fake = tmp_path / "notes.png"
    fake.write_text("<!doctype html><html>not a picture</html>")
    page.set_input_files("#img2img-image input[type=file]", str(fake))
    page.wait_for_selector("#img2img-image.field-error >> text=Picture: notes.png", timeout=30_000)
    assert "not an image" in page.inner_text("#img2img-image")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err  # a user's mistake is one log line, not a stack trace


def test_size_presets_follow_the_base_s_family_when_it_is_switched(browser, server, tiny_models):
    """SD 1.x's sizes, then SDXL's once the base chosen in the model bar is SDXL, in every tab,
    and a button sets the size its label says. Last in the module: it leaves a fresh engine."""
    page, _ = open_page(browser, server, VIEW)

    def labels(i: int) -> set[str]:
        return set(page.eval_on_selector_all(f"[id$='-size-{i}']", "els => els.map(e => "
                                             "e.textContent.trim())"))  # fmt: skip

    assert labels(1) == {"512×768"}
    for base, size in ((tiny_models["sdxl"], "832×1216"), (tiny_models["sd"], "512×768")):
        page.click("#base-model input")
        page.get_by_role("option", name=str(base), exact=True).click()
        try:
            page.wait_for_function(
                "s => document.querySelector('#txt2img-size-1')?.textContent.includes(s)",
                arg=size, timeout=120_000,
            )  # fmt: skip
        except Exception as exc:  # once in three loaded runs: say where the switch stood
            state = (page.input_value("#base-model input"), page.inner_text("#model-status"))
            raise AssertionError(f"no {size} preset after choosing {base}: {state}") from exc
        assert labels(1) == {size}  # the four drawing tabs alike
        if size == "832×1216":
            # the SD 1.x LoRA in the chooser does not fit an SDXL base: left out, and said
            status = page.inner_text("#model-status")
            assert "Model: sdxl" in status and "LoRA left out: " in status, status
            page.click("#txt2img-size-1")
            page.wait_for_function(
                "() => document.querySelector('#txt2img-height input[type=number]')?.value"
                " === '1216'"
            )
            assert page.input_value("#txt2img-width input[type=number]") == "832"


def test_a_lora_tag_typed_in_the_prompt_draws_with_that_lora_and_an_unknown_one_is_said(
    browser, server
):
    """`<lora:checkpoint-8:0.5>` typed in the prompt, A1111's way: drawn with that checkpoint
    beside the LoRA in use, in `Lora hashes`, the tag kept in the PNG's prompt; a name
    found nowhere is said beside Generate and the drawing goes on without it."""
    page, failed = open_page(browser, server, VIEW)
    prompt = "a boy <lora:checkpoint-8:0.5> <lora:nosuch:1>"
    _draw_txt2img(page, prompt, steps="2", width="64", height="64")
    said = page.inner_text("#txt2img-status")
    assert "<lora:nosuch>: no LoRA of that name in" in said and "drawn without it" in said, said
    info = _value(page, "#txt2img-info")
    assert info.splitlines()[0].startswith(prompt)
    hashes = re.search(r'Lora hashes: "([^"]*)"', info).group(1)
    names = [item.split(":")[0] for item in hashes.split(", ")]
    assert names[-1] == "checkpoint-8", hashes  # after the LoRA in use, if one is drawn
    assert not failed
