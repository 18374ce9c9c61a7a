"""The studio's X/Y/Z plot tab: in Chromium, a 2x1 grid drawn with the Text to image tab's
settings, its cells counted beside Generate and the labelled grid shown with its parameters;
through gradio_client, `/xyz` with a checkpoint axis and `/xyz_interrupt`."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from kshd.drawing.pnginfo import parse_parameters, read_parameters

from .helpers.studio import open_page, studio_server, wait_for_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    yield from studio_server(tiny_models, random_lora, tmp_path_factory.mktemp("xyz_outputs"))


def test_the_tab_draws_a_grid_with_the_text_to_image_settings(browser, server):
    page, failed = open_page(browser, server)
    page.fill("#txt2img-prompt textarea", "an anime girl")
    page.fill("#txt2img-steps input[type=number]", "2")
    page.press("#txt2img-steps input[type=number]", "Enter")
    page.get_by_role("tab", name="X/Y/Z plot").click()
    page.fill("#xyz-x-values textarea", "3, 4")  # X type Seed, Y Nothing: A1111's defaults
    page.click("#xyz-generate")
    assert wait_for_images(page, "xyz") == [2 * 128]  # no row band: Y is Nothing
    page.wait_for_selector("#xyz-generate:not([disabled])", timeout=30_000)
    assert re.search(r"2/2 cells in \d+\.\d s", page.inner_text("#xyz-status"))
    info = page.input_value("#xyz-info textarea")
    assert info.startswith("an anime girl") and "Steps: 2" in info and "Seed: 3" in info
    assert info.splitlines()[-1].endswith('Script: X/Y/Z plot, X Type: Seed, X Values: "3, 4", '
                                          'Fixed X Values: "3, 4"')  # fmt: skip
    assert not failed


def test_a_refused_grid_is_said_beside_generate_and_leaves_it_usable(browser, server):
    """Bad axis values end the job with one line beside Generate; Generate comes back and the
    next grid draws (the tab is never left locked)."""
    page, failed = open_page(browser, server)
    page.fill("#txt2img-steps input[type=number]", "2")
    page.press("#txt2img-steps input[type=number]", "Enter")
    page.get_by_role("tab", name="X/Y/Z plot").click()
    page.fill("#xyz-x-values textarea", "many")
    page.click("#xyz-generate")
    page.wait_for_selector("#xyz-status >> text=X values: 'many' is not a whole number",
                           timeout=60_000)  # fmt: skip
    page.wait_for_selector("#xyz-generate:not([disabled])", timeout=30_000)
    assert page.is_disabled("#xyz-interrupt")
    page.fill("#xyz-x-values textarea", "3")
    page.click("#xyz-generate")
    page.wait_for_selector("#xyz-status >> text=1/1 cells", timeout=120_000)
    page.wait_for_selector("#xyz-generate:not([disabled])", timeout=30_000)


def test_client_draws_a_checkpoint_by_seed_grid_and_interrupt_says_when_idle(server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    said = client.predict(api_name="/xyz_interrupt")
    assert said == "interrupt: nothing of yours is drawing"
    gallery, info, files, status = client.predict(
        prompt="a girl", steps=2, seed=1, width=64, height=64, lora_scale=1.0,
        x_type="Seed", x_values="1, 2", y_type="LoRA", y_values="checkpoint 8, None",
        api_name="/xyz",
    )  # fmt: skip
    assert status.startswith("4/4 cells")
    grid = Image.open(gallery[0]["image"])
    assert grid.width == 48 + 2 * 64 and grid.height > 2 * 64
    said = parse_parameters(read_parameters(files[0]))
    assert (said["Y Type"], said["Y Values"], said["Seed"]) == ("LoRA", "checkpoint 8, None", "1")
    assert 'Lora hashes: "checkpoint-8: ' in info  # the first cell's LoRA
    assert len(files) == 5  # the grid and its four cells
    assert server["engine"].lora_path == str(server["lora"])  # the LoRA in use put back
    with pytest.raises(Exception, match="X values: 'x' is not a whole number"):
        client.predict(prompt="a girl", x_type="Seed", x_values="x", api_name="/xyz")


def test_client_interrupt_ends_the_grid_after_the_cell_in_progress(server, monkeypatch):
    """Interrupt asked while the first cell draws: that cell is finished and kept, no other
    is drawn, and the grid is saved with it."""
    import threading

    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    engine, drawing, asked = server["engine"], threading.Event(), threading.Event()
    generate = engine.generate

    def holding(req, progress=None, **kw):
        def seen(done, total):
            progress(done, total)
            if done == 1 and not drawing.is_set():
                drawing.set()
                assert asked.wait(60)

        return generate(req, seen, **kw)

    monkeypatch.setattr(engine, "generate", holding)
    job = client.submit(prompt="a girl", steps=2, seed=1, width=64, height=64, x_type="Seed",
                        x_values="1-3", api_name="/xyz")  # fmt: skip
    assert drawing.wait(60)
    said = client.predict(api_name="/xyz_interrupt")
    assert said == "interrupt: asked (the grid ends after the cell in progress)"
    asked.set()
    gallery, info, files, status = job.result(timeout=120)
    assert status.startswith("1/3 cells") and status.endswith("(interrupted)")
    assert len(files) == 2 and "Seed: 1" in info  # the grid and its one cell
