"""A studio tab is never left locked: an error raised while a job runs (a ControlNet that is not
on disk, the engine failing mid-drawing) ends the job, is said in one line beside Generate, and
Generate draws again; a refused field below the fold is named beside Generate too; a refused
base model reverts; a waiting job is taken out of the queue by its own client's Interrupt; PNG
Info never shows a server path; off loopback the model bar loads only what is configured. In
Debian's Chromium at 1366x768 and through gradio_client, on the tiny SD and its ControlNet."""

from __future__ import annotations

import threading

import pytest
from PIL import Image, ImageDraw

from .helpers.studio import free_port, gui_cfg, open_page, wait_for_images

pytestmark = pytest.mark.slow
VIEW = (1366, 768)


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    from kshd.drawing.gui import serve

    outputs = tmp_path_factory.mktemp("error_outputs")
    port = free_port()
    cfg = gui_cfg(tiny_models, random_lora, outputs, port,
                  f"generate.control.models.lineart={tiny_models['controlnet']}",
                  "generate.control.type=lineart", "generate.width=64", "generate.height=64",
                  "generate.steps=2")  # fmt: skip
    ui, engine = serve(cfg, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "engine": engine, "ui": ui}
    with engine.lock:
        ui.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    img = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(img).ellipse((16, 12, 80, 84), outline="black", width=3)
    path = tmp_path_factory.mktemp("picture") / "face.png"
    img.save(path)
    return str(path)


def _fail_mid_drawing(monkeypatch, engine) -> None:
    """The engine raises at the first step of the next job, as a GPU out of memory would."""
    generate = engine.generate

    def failing(req, progress=None, **kw):
        def step(done, total):
            raise RuntimeError("CUDA out of memory (a test's stand-in)\nsecond line")

        return generate(req, step, **kw)

    monkeypatch.setattr(engine, "generate", failing)


def _brush(page, editor: str) -> None:
    page.click(f"{editor} button[aria-label=Brush]")
    box = page.wait_for_selector(f"{editor} canvas").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=6)
    page.mouse.up()


def _open_tab(page, tab: str, picture: str) -> None:
    """The tab on screen with what its Generate needs (a picture, brushed or a sketch)."""
    if tab in ("img2img", "inpaint"):
        page.click("button[role=tab]:has-text('Image to image')")
    if tab == "img2img":
        page.set_input_files("#img2img-image input[type=file]", picture)
        page.wait_for_selector("#img2img-image img", timeout=30_000)
    elif tab == "inpaint":
        page.click("button[role=tab]:has-text('Inpaint')")
        page.wait_for_selector("#inpaint-image canvas")
        page.set_input_files("#inpaint-image input[type=file]", picture)
        _brush(page, "#inpaint-image")
    elif tab == "sketch":
        page.click("button[role=tab]:has-text('Sketch to style')")
        page.wait_for_selector("#sketch-sketch canvas")
        page.set_input_files("#sketch-sketch input[type=file]", picture)
        page.wait_for_selector("#sketch-control-preview img", timeout=60_000)
    page.fill(f"#{tab}-prompt textarea", "a girl")


def _pick_control_type(page, name: str) -> None:
    page.click("#sketch-control-type input")
    page.get_by_role("option", name=name, exact=True).click()


@pytest.mark.parametrize("tab", ["txt2img", "img2img", "inpaint", "sketch"])
def test_an_error_in_the_job_ends_it_is_said_beside_generate_and_generate_draws_again(
    browser, server, picture, tab, monkeypatch
):
    page, _ = open_page(browser, server, VIEW)
    _open_tab(page, tab, picture)
    if tab == "sketch":  # the case: canny, whose ControlNet is not on disk (offline)
        _pick_control_type(page, "canny")
        said = "control_type: config key generate.control.models.canny = "
    else:
        _fail_mid_drawing(monkeypatch, server["engine"])
        said = "RuntimeError: CUDA out of memory (a test's stand-in)"
    page.click(f"#{tab}-generate")
    page.wait_for_selector(f"#{tab}-status .status-error", timeout=60_000)
    status = page.inner_text(f"#{tab}-status")
    assert said in status and "second line" not in status, status
    page.wait_for_selector(f"#{tab}-generate:not([disabled])", timeout=30_000)
    assert page.inner_text(f"#{tab}-generate") == "Generate"
    assert not page.is_enabled(f"#{tab}-interrupt") and not page.is_enabled(f"#{tab}-skip")
    monkeypatch.undo()  # the fault gone: the same tab draws
    if tab == "sketch":
        _pick_control_type(page, "lineart")
    page.click(f"#{tab}-generate")
    assert wait_for_images(page, tab) == [64]
    page.wait_for_function(
        "tab => /1 image in/.test(document.querySelector('#' + tab + '-status').innerText)",
        arg=tab, timeout=30_000,
    )  # fmt: skip


def test_a_refused_field_below_the_fold_is_named_beside_generate(browser, server):
    page, _ = open_page(browser, server, VIEW)
    page.fill("#txt2img-prompt textarea", "a girl")
    for box, value in (("#txt2img-seed input", "-5"), ("#txt2img-cfg input[type=number]", "0")):
        page.fill(box, value)
        page.press(box, "Tab")
    page.click("#txt2img-generate")
    page.wait_for_selector("#txt2img-status .status-error", timeout=30_000)
    status = page.inner_text("#txt2img-status")
    assert "Not drawn" in status and "Seed (-1 = random)" in status and "CFG scale" in status
    assert "Seed (-1 = random): -5 must be a whole number" in page.inner_text("#txt2img-seed")
    assert page.is_enabled("#txt2img-generate")
    page.fill("#txt2img-seed input", "3")  # the seed fixed: only the CFG scale left to name
    page.press("#txt2img-seed input", "Tab")
    page.click("#txt2img-generate")
    page.wait_for_function(
        "() => { const s = document.querySelector('#txt2img-status').innerText;"
        " return s.includes('CFG scale') && !s.includes('Seed'); }", timeout=30_000,
    )  # fmt: skip


def test_png_info_names_a_file_that_is_no_picture_by_its_own_name(server, tmp_path):
    """Never by the server's temporary path."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.png"
    notes.write_text("<!doctype html><html>not a picture</html>")
    client = Client(server["url"], verbose=False)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(notes)), api_name="/png_info")
    assert str(err.value) == "PNG file: notes.png is not an image"


def test_a_second_client_s_interrupt_takes_its_own_waiting_job_out_of_the_queue(
    server, monkeypatch
):
    """Client A's job is held drawing; B's waits behind it. B's Interrupt takes B's job out
    of the queue (B hears of it as an error) and leaves A's to finish; only A's is drawn."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    engine, queue = server["engine"], server["ui"]._queue
    held, release, waiting = threading.Event(), threading.Event(), threading.Event()
    generate, drawn = engine.generate, []

    def holding(req, progress=None, **kw):
        drawn.append(req.prompt)

        def step(done, total):
            progress(done, total)
            if done == 1:
                held.set()
                assert release.wait(60)

        return generate(req, step, **kw)

    send = queue.send_message

    def recording(event, message):
        send(event, message)
        if message.msg == "estimation" and message.rank is not None:
            waiting.set()  # a job is waiting in the queue

    monkeypatch.setattr(engine, "generate", holding)
    monkeypatch.setattr(queue, "send_message", recording)
    a, b = Client(server["url"], verbose=False), Client(server["url"], verbose=False)
    common = {"steps": 2, "seed": 1, "width": 64, "height": 64, "api_name": "/txt2img"}
    first = a.submit(prompt="a", **common)
    try:
        assert held.wait(60)
        waiting.clear()  # A's own estimation, sent while it waited to start, is not B's
        second = b.submit(prompt="b", **common)
        assert waiting.wait(60)
        said = b.predict(api_name="/txt2img_interrupt")
        assert said == "interrupt: interrupted before it started: taken out of the queue"
        with pytest.raises(AppError, match="interrupted before it started"):
            second.result(timeout=60)
    finally:
        release.set()
    gallery, _, _ = first.result(timeout=120)
    assert len(gallery) == 1 and drawn == ["a"]


def test_a_refused_base_model_reverts_to_the_one_in_use_named_with_its_hash(browser, server):
    engine = server["engine"]
    base = engine.settings.pretrained
    page, _ = open_page(browser, server, VIEW)
    bar = page.inner_text("#model-status")
    assert f"Model: {engine.model_name} ({engine.model_hash})" in bar, bar  # name and hash
    page.fill("#base-model input", "/no/such/model")
    page.press("#base-model input", "Enter")
    page.wait_for_function(
        "b => document.querySelector('#base-model input')?.value === b", arg=base,
        timeout=60_000,
    )  # fmt: skip
    assert page.input_value("#lora-choice input") not in ("", "/no/such/model")


def test_off_loopback_the_model_bar_loads_only_what_is_configured(
    tiny_models, random_lora, tmp_path
):
    """Bound to 0.0.0.0: a folder that exists and one that does not get the same answer, a
    LoRA outside the configured folders is refused, one inside them loads."""
    import shutil

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from kshd.adapters.files import DIFFUSERS_FILE
    from kshd.drawing.gui import serve

    port = free_port()
    loras = tmp_path / "loras"
    loras.mkdir()
    shutil.copy(random_lora / DIFFUSERS_FILE, loras / "inside.safetensors")
    shutil.copy(random_lora / DIFFUSERS_FILE, tmp_path / "outside.safetensors")
    cfg = gui_cfg(tiny_models, random_lora, tmp_path / "outputs", port, "generate.gui.host=0.0.0.0",
                  f"generate.gui.lora_dirs=[{loras}]")  # fmt: skip
    ui, engine = serve(cfg, auth="artist:s3cret", block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", auth=("artist", "s3cret"), verbose=False)
        base, lora = engine.settings.pretrained, engine.lora_path
        answers = []
        for probe in (str(tmp_path), str(tmp_path / "no-such-folder")):
            with pytest.raises(AppError) as err:
                client.predict(probe, lora, api_name="/set_model")
            answers.append(str(err.value).replace(probe, "<path>"))
        assert answers[0] == answers[1] and "not a configured base model" in answers[0]
        with pytest.raises(AppError, match="LoRA: .* is not in a configured LoRA folder"):
            client.predict(base, str(tmp_path / "outside.safetensors"), api_name="/set_model")
        said = client.predict(base, str(loras / "inside.safetensors"), api_name="/set_model")
        assert "**inside**" in said
    finally:
        with engine.lock:
            ui.close()
