"""The web GUI: both endpoints through gradio_client, and the page driven in Debian's Chromium."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from PIL import Image

from kshd.drawing.pnginfo import parse_parameters, read_parameters

from .helpers.studio import (
    free_port,
    gui_cfg,
    open_page,
    record,
    recorded,
    wait_for_images,
    watch_progress,
)

pytestmark = pytest.mark.slow


class _RecordingEngine:
    """An engine that records the request it is given and draws nothing."""

    def __init__(self, limits):
        self.limits, self.notes, self.requests = limits, [], []
        self.model_name, self.lora_name, self.lora_hash, self.lora_path = "tiny", None, None, None
        self.model_hash = None
        self.family = "sd1"  # the size presets' family
        self.settings = SimpleNamespace(
            pretrained="tiny",
            outputs_dir="outputs",
            control_models={"lineart_anime": "some/controlnet"},
        )

    def generate(self, req, progress, owner=None):
        self.requests.append(req)
        return SimpleNamespace(paths=[], seeds=[], infotexts=["drawn"], notes=[])


def test_each_input_reaches_the_request_field_it_is_wired_and_named_for(tiny_models, tmp_path):
    """The field list is written once (gui.TAB_FIELDS): the components' order, the handlers'
    signatures (Gradio's API names) and the Request fields filled must agree, by position."""
    import inspect

    import gradio as gr

    from kshd.drawing.gui import build_ui
    from kshd.drawing.gui_actions import Handlers
    from kshd.drawing.gui_modes import IMG2IMG_FIELDS, SKETCH_FIELDS, TAB_FIELDS
    from kshd.drawing.request import Request

    cfg = gui_cfg(tiny_models, tmp_path / "lora", tmp_path, 0)
    engine = _RecordingEngine(cfg.generate.limits)
    ui = build_ui(engine, Request.from_settings(cfg.generate))
    labels = {
        "txt2img": ["Prompt", "Negative prompt", "Sampling method", "Sampling steps", "CFG scale",
                    "Seed (-1 = random)", "Width", "Height", "Batch count", "Batch size",
                    "LoRA strength", "Positive prefix", "Negative prefix", "Clip skip"],
    }  # fmt: skip
    labels["img2img"] = ["Picture", "Denoising strength", "Resize mode", *labels["txt2img"]]
    labels["sketch"] = ["Sketch", "Control type", "Preprocessor", "Control weight",
                        "Starting control step", "Ending control step", "Control mode",
                        "Resize mode", *labels["txt2img"]]  # fmt: skip
    wired = {f.api_name: [c.label for c in f.inputs] for f in ui.fns.values() if f.api_name}
    assert {k: wired[k] for k in labels} == labels
    for name, fields in (("txt2img", TAB_FIELDS), ("img2img", IMG2IMG_FIELDS),
                         ("sketch", SKETCH_FIELDS)):  # fmt: skip
        handler = getattr(Handlers(engine), name)
        assert list(inspect.signature(handler).parameters) == [*fields, "progress", "request"]
        values = [f"{field}-value" for field in fields]  # a distinct value per position
        gallery, info, files, drawn = handler(*values, progress=lambda *a, **k: None)
        assert (gallery, info, files, drawn) == ([], "drawn", [], [])
        req = engine.requests[-1]
        assert {f: getattr(req, f) for f in fields} == dict(zip(fields, values, strict=True))
    with pytest.raises(gr.Error, match="Sketch: upload or draw a sketch"):
        Handlers(engine).sketch(None, *values[1:], progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="Picture: upload a picture"):
        Handlers(engine).img2img(None, *IMG2IMG_FIELDS[1:], progress=lambda *a, **k: None)


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    from kshd.drawing.gui import serve

    outputs = tmp_path_factory.mktemp("gui_outputs")
    port = free_port()
    ui, engine = serve(gui_cfg(tiny_models, random_lora, outputs, port), block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "ui": ui}
    with engine.lock:  # no drawing may be cut off by the end of the tests
        ui.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


def _txt2img(client, **kw):
    args = dict(prompt="an anime girl", steps=3, seed=21, width=64, height=64, batch_size=2)
    return client.predict(**{**args, **kw}, api_name="/txt2img")


def test_binds_loopback_without_share(server):
    ui = server["ui"]
    assert ui.server_name == "127.0.0.1" and not ui.share
    assert ui.local_url.startswith("http://127.0.0.1:")


def test_client_txt2img(client, server):
    gallery, info, files = _txt2img(client, lora_scale=0.6)
    assert [item["caption"] for item in gallery] == ["seed 21", "seed 22"]
    assert "Seed: 21" in info and "Seed: 22" in info and "<lora:ksh_drawing_style:0.6>" in info
    saved = sorted((server["outputs"] / "txt2img").rglob("*-21.png"))
    assert saved, "the PNG is kept in the outputs folder"
    params = parse_parameters(read_parameters(files[0]))  # the download keeps the parameters
    assert params["Seed"] == "21" and params["Steps"] == "3" and params["Size"] == "64x64"
    assert Image.open(gallery[1]["image"]).size == (64, 64)


def test_client_img2img(client, tmp_path):
    from gradio_client import handle_file

    picture = tmp_path / "sketch.png"
    Image.new("RGBA", (90, 60), (0, 0, 255, 128)).save(picture)
    gallery, info, files = client.predict(
        image=handle_file(str(picture)),
        strength=0.5,
        resize_mode="fill",
        prompt="a boy",
        steps=4,
        seed=5,
        width=64,
        height=64,
        api_name="/img2img",
    )
    assert len(gallery) == 1 and "Denoising strength: 0.5" in info
    assert parse_parameters(read_parameters(files[0]))["Seed"] == "5"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps: 0 must be a whole number from 1 to 150"),
        ({"steps": 151}, "steps: 151 must be a whole number from 1 to 150"),  # not 0 to 150
        ({"width": 100}, "width: 100 is not a multiple of 8"),
        ({"seed": -7}, "seed: -7 must be a whole number"),
        ({"sampler": "no such sampler"}, "no such sampler"),
        ({"prompt": "x" * 6000}, "prompt: 6000 characters"),
    ],
)
def test_client_errors_are_messages_and_the_server_keeps_serving(client, change, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape(message)):
        _txt2img(client, **change)
    gallery, _, _ = _txt2img(client, batch_size=1, steps=2)
    assert len(gallery) == 1


def test_client_bad_uploads(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "notes.png"
    text.write_text("<!doctype html><html>not a picture</html>")
    huge = tmp_path / "huge.png"
    Image.new("L", (2100, 2000)).save(huge)  # 4.2 Mpx, over this server's 4 Mpx limit
    for path, message in (
        (text, "not an image"),
        (huge, "larger than generate.limits.max_upload_pixels: 2100x2000"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(image=handle_file(str(path)), prompt="a", api_name="/img2img")
    with pytest.raises(AppError, match="strength: 2.0 must be a number from 0 to 1"):
        client.predict(image=handle_file(str(huge)), strength=2, api_name="/img2img")


def test_auth_from_the_environment(tiny_models, random_lora, tmp_path):
    from gradio_client import Client

    from kshd.drawing.gui import serve

    port = free_port()
    cfg = gui_cfg(tiny_models, random_lora, tmp_path, port)
    ui, engine = serve(cfg, auth="artist:s3cret", block=False)
    try:
        with pytest.raises(Exception):  # noqa: B017 (gradio_client raises different types)
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        ok = Client(f"http://127.0.0.1:{port}/", auth=("artist", "s3cret"), verbose=False)
        gallery, _, _ = _txt2img(ok, batch_size=1, steps=2)
        assert len(gallery) == 1
    finally:
        with engine.lock:
            ui.close()


# --- in the browser -------------------------------------------------------------------------


def test_browser_txt2img_shows_progress_and_the_image(browser, server):
    page, failed = open_page(browser, server)
    page.fill("#txt2img-prompt textarea", "an anime girl, (blonde hair:1.2)")
    record(page, "txt2img")
    page.click("#txt2img-generate")
    seen = watch_progress(page, "txt2img")
    assert len(set(seen)) >= 2, f"progress with step counts expected, saw {seen}"
    assert wait_for_images(page, "txt2img") == [128]
    seed = re.search(r"Seed: (\d+)", page.input_value("#txt2img-info textarea")).group(1)
    assert f"seed {seed}" in page.inner_text("#txt2img-gallery")
    assert not failed


def test_browser_error_is_shown_in_the_page(browser, server):
    page, _ = open_page(browser, server)
    page.fill("#txt2img-prompt textarea", "a girl")
    page.fill("#txt2img-seed input", "-5")
    page.click("#txt2img-generate")
    page.wait_for_selector(  # beside the field, by its label
        "#txt2img-seed >> text=Seed (-1 = random): -5 must be a whole number", timeout=30_000
    )
    assert not page.query_selector("#txt2img-gallery img")


def test_browser_two_tabs_queue_and_both_finish(browser, server):
    first, _ = open_page(browser, server)
    second, _ = open_page(browser, server)
    for page in (first, second):
        page.fill("#txt2img-prompt textarea", "a girl in a park")
    record(second, "txt2img", "status")  # beside its Generate button
    first.click("#txt2img-generate")
    second.click("#txt2img-generate")
    assert wait_for_images(second, "txt2img") == [128]
    shown = recorded(second, "txt2img")
    assert "queue" in shown, f"the second tab waits in the queue while the first draws: {shown!r}"
    assert re.search(r"\d+/\d+ steps", shown), shown  # then its progress, in the same place
    assert wait_for_images(first, "txt2img") == [128]


def test_browser_send_to_img2img_and_upload(browser, server, tmp_path):
    page, failed = open_page(browser, server)
    page.fill("#txt2img-prompt textarea", "a boy")
    page.click("#txt2img-generate")
    wait_for_images(page, "txt2img")
    page.click("#txt2img-send-to-img2img")
    page.wait_for_selector("#img2img-image img", timeout=30_000)
    page.fill("#img2img-prompt textarea", "a boy, redrawn")
    record(page, "img2img")
    page.click("#img2img-generate")
    seen = watch_progress(page, "img2img")
    assert seen and wait_for_images(page, "img2img") == [128]
    assert "Denoising strength: 0.6" in page.input_value("#img2img-info textarea")
    # a fresh upload: a photo-like JPEG from disk
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (200, 150), "olive").save(photo)
    before = page.input_value("#img2img-info textarea")
    old_src = page.get_attribute("#img2img-image img", "src")
    page.set_input_files("#img2img-image input[type=file]", str(photo))
    page.wait_for_function(  # the upload has replaced the sent picture
        "old => { const i = document.querySelector('#img2img-image img');"
        " return i && i.src !== old && i.complete && i.naturalWidth === 200; }",
        arg=old_src,
        timeout=30_000,
    )
    # the send carried the seed too: a new one, so that the parameters differ
    page.click("#img2img-random-seed")
    page.wait_for_function("() => document.querySelector('#img2img-seed input').value === '-1'")
    page.click("#img2img-generate")
    page.wait_for_function(
        "old => { const v = document.querySelector('#img2img-info textarea').value;"
        " return v.includes('Seed') && v !== old; }",
        arg=before,
        timeout=90_000,
    )
    assert wait_for_images(page, "img2img") == [128]
    assert not failed
