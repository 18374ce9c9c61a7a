"""The studio's third way to draw and inpainting: the Sketch to style tab in Debian's
Chromium (upload or draw a sketch, see the lines the ControlNet will follow, draw, send on), the
Inpaint tab of Image to image (brush the part to redraw), and their `/sketch` and `/inpaint`
endpoints through gradio_client, on the tiny SD and its tiny ControlNet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kshd.drawing.pnginfo import parse_parameters, read_parameters

from .helpers.studio import free_port, gui_cfg, open_page, wait_for_images

pytestmark = pytest.mark.slow
VIEW = (1366, 768)


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    from kshd.drawing.gui import serve

    outputs = tmp_path_factory.mktemp("sketch_outputs")
    port = free_port()
    cfg = gui_cfg(tiny_models, random_lora, outputs, port,
                  f"generate.control.models.lineart={tiny_models['controlnet']}",
                  "generate.control.type=lineart", "generate.width=64", "generate.height=64",
                  "generate.steps=4")  # fmt: skip
    ui, engine = serve(cfg, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "engine": engine}
    with engine.lock:
        ui.close()


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> str:
    img = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(img).ellipse((16, 12, 80, 84), outline="black", width=3)
    path = tmp_path_factory.mktemp("sketch") / "face.png"
    img.save(path)
    return str(path)


def test_client_sketch_endpoint_draws_with_the_controlnet(server, sketch):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    assert "/sketch" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    drawn = {"background": handle_file(sketch), "layers": [], "composite": None}  # the editor's
    gallery, info, files = client.predict(
        control_image=drawn, prompt="a girl", seed=3, preprocessor="invert",
        control_weight=0.9, api_name="/sketch",
    )  # fmt: skip
    assert len(gallery) == 1 and "ControlNet 0: " in info
    unit = parse_parameters(read_parameters(files[0]))["ControlNet 0"]
    assert unit.startswith("Module: invert, Model: controlnet [") and "Weight: 0.9" in unit
    with pytest.raises(AppError, match="guidance_end: 0.1 is before guidance_start 0.5"):
        client.predict(control_image=drawn, prompt="a", guidance_start=0.5,
                       guidance_end=0.1, api_name="/sketch")  # fmt: skip


def test_the_sketch_tab_shows_the_lines_then_draws_and_sends(browser, server, sketch):
    page, failed = open_page(browser, server, VIEW)
    page.click("button[role=tab]:has-text('Sketch to style')")
    page.wait_for_selector("#sketch-sketch canvas")  # the editor is ready for a picture
    page.set_input_files("#sketch-sketch input[type=file]", sketch)
    page.wait_for_selector("#sketch-control-preview img", timeout=60_000)  # before drawing
    page.fill("#sketch-prompt textarea", "a girl")
    page.click("#sketch-generate")
    assert wait_for_images(page, "sketch") == [64]
    assert "ControlNet 0: " in page.input_value("#sketch-info textarea")
    page.click("#sketch-send-to-img2img")
    page.wait_for_selector("#img2img-image img", timeout=30_000)
    assert page.input_value("#img2img-prompt textarea") == "a girl"
    assert not failed


def test_a_sketch_drawn_on_the_canvas_is_drawn_from(browser, server):
    page, _ = open_page(browser, server, VIEW)
    page.click("button[role=tab]:has-text('Sketch to style')")
    page.click("#sketch-sketch button[aria-label=Brush]")  # the draw tool, as the box says
    canvas = page.wait_for_selector("#sketch-sketch canvas")
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y - 40)
    page.mouse.down()
    for dx, dy in ((40, -40), (40, 40), (-40, 40), (-40, -40)):  # a square, stroke by stroke
        page.mouse.move(x + dx, y + dy, steps=8)
    page.mouse.up()
    preview = page.wait_for_selector("#sketch-control-preview img", timeout=60_000)
    lines = _fetched(preview.get_attribute("src"), server["url"])
    assert lines.shape == (64, 64) and lines[0, 0] == 0 and (lines > 63).sum() > 20  # the square
    page.fill("#sketch-prompt textarea", "a girl")
    page.click("#sketch-generate")
    assert wait_for_images(page, "sketch") == [64]
    assert "ControlNet 0: " in page.input_value("#sketch-info textarea")


def _fetched(src: str, url: str) -> np.ndarray:
    """An image the page shows, fetched from the server as the browser did, in grey levels."""
    import io
    from urllib.parse import urljoin

    import httpx

    body = httpx.get(urljoin(url, src), timeout=30).content
    return np.asarray(Image.open(io.BytesIO(body)).convert("L"))


def _noise(path, side: int = 128) -> np.ndarray:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels.astype(np.int16)


def test_client_inpaint_endpoint_keeps_what_is_not_masked(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    pixels = _noise(tmp_path / "picture.png", 64)
    strokes = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # a brush layer: strokes on nothing
    ImageDraw.Draw(strokes).ellipse((20, 20, 44, 44), fill=(255, 42, 109, 255))
    strokes.save(tmp_path / "strokes.png")
    layers = [handle_file(str(tmp_path / "strokes.png"))]
    brushed = {"background": handle_file(str(tmp_path / "picture.png")), "layers": layers,
               "composite": None}  # fmt: skip
    gallery, info, _ = client.predict(image=brushed, prompt="a girl", seed=2, strength=1,
                                      mask_blur=0, api_name="/inpaint")  # fmt: skip
    drawn = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"), dtype=np.int16)
    outside = np.asarray(strokes.getchannel("A")) == 0
    assert np.array_equal(drawn[outside], pixels[outside]) and "Inpaint area: " in info
    assert np.abs(drawn[~outside] - pixels[~outside]).mean() > 20
    bare = {**brushed, "layers": []}
    with pytest.raises(AppError, match="Picture: brush the part to redraw"):
        client.predict(image=bare, prompt="a", api_name="/inpaint")


def test_inpaint_in_the_browser_redraws_the_brushed_part(browser, server, tmp_path):
    pixels = _noise(tmp_path / "picture.png")
    page, failed = open_page(browser, server, VIEW)
    page.click("button[role=tab]:has-text('Image to image')")
    page.click("button[role=tab]:has-text('Inpaint')")
    page.wait_for_selector("#inpaint-image canvas")
    page.set_input_files("#inpaint-image input[type=file]", str(tmp_path / "picture.png"))
    page.fill("#inpaint-prompt textarea", "a girl")
    page.click("#inpaint-generate")  # nothing brushed yet: said beside the picture
    page.wait_for_selector("#inpaint-image.field-error >> text=brush the part", timeout=30_000)
    page.click("#inpaint-image button[aria-label=Brush]")
    box = page.wait_for_selector("#inpaint-image canvas").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=6)
    page.mouse.up()
    page.click("#inpaint-generate")
    assert wait_for_images(page, "inpaint") == [64]
    assert "Inpaint area: Whole picture" in page.input_value("#inpaint-info textarea")
    refused = [f for f in failed if f.startswith("422 ") and "/queue/join" in f]
    assert len(refused) == 1 and len(failed) == 1  # the validator's answer to the first click
    newest = max(server["outputs"].rglob("inpaint/*/*.png"), key=lambda p: p.stat().st_mtime)
    drawn = np.asarray(Image.open(newest).convert("RGB"), dtype=np.int16)
    fitted = np.asarray(Image.fromarray(pixels.astype(np.uint8)).resize((64, 64), Image.LANCZOS),
                        dtype=np.int16)  # fmt: skip
    assert np.array_equal(drawn[:8, :8], fitted[:8, :8])  # a corner, far from the stroke
    assert np.abs(drawn[28:36, 28:36] - fitted[28:36, 28:36]).mean() > 10  # the stroke's middle


def test_png_info_sends_a_sketchs_unit_back_to_the_sketch_tab(browser, server, sketch):
    """A PNG the sketch tab wrote, read in PNG Info: its ControlNet unit is no 'not used' key,
    and its settings go back into the Sketch to style tab's fields."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    drawn = {"background": handle_file(sketch), "layers": [], "composite": None}
    unit = {"control_weight": 0.65, "guidance_end": 0.8, "control_mode": "control"}
    _, _, files = client.predict(control_image=drawn, prompt="a girl", seed=4, **unit,
                                 api_name="/sketch")  # fmt: skip
    page, _ = open_page(browser, server, VIEW)
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo-image input[type=file]", files[0])
    page.wait_for_function("() => document.querySelector('#pnginfo-text textarea')?.value"
                           "?.includes('ControlNet 0')")  # fmt: skip
    assert "Not used here" not in page.inner_text("#pnginfo-note")
    page.click("#pnginfo-send-to-sketch")
    page.wait_for_function("() => document.querySelector('#sketch-control-weight input"
                           "[type=number]')?.value === '0.65'")  # fmt: skip
    assert page.input_value("#sketch-guidance-end input[type=number]") == "0.8"
    assert page.is_checked("#sketch-control-mode input[value=control]") or page.is_checked(
        "#sketch-control-mode label:has-text('ControlNet is more important') input"
    )
    in_use = server["engine"].lora_name  # the LoRA drawn with comes back as A1111 writes it
    tag = f" <lora:{in_use}:1>" if in_use else ""
    assert page.input_value("#sketch-prompt textarea") == f"a girl{tag}"
