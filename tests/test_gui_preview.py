"""While the studio draws: the live preview of the batch in progress beside the gallery, each
batch's image in the gallery as soon as it ends (before the job does), and the ETA beside the
progress; once the job ends, its images and no preview. In Debian's Chromium, on the tiny SD,
the engine held at a step."""

from __future__ import annotations

import threading

import pytest

from .helpers.studio import free_port, gui_cfg, open_page, wait_for_images

pytestmark = pytest.mark.slow
STEPS = 4


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    from kshd.drawing.gui import serve

    outputs = tmp_path_factory.mktemp("preview_outputs")
    port = free_port()
    cfg = gui_cfg(tiny_models, random_lora, outputs, port, "generate.width=64",
                  "generate.height=64", f"generate.steps={STEPS}", "generate.preview.every=1",
                  "generate.preview.method=full")  # fmt: skip
    ui, engine = serve(cfg, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "engine": engine, "ui": ui}
    with engine.lock:
        ui.close()


def _captions(page) -> list[str]:
    return page.eval_on_selector_all(
        "#txt2img-gallery .caption-label", "els => els.map(e => e.innerText)"
    )


def test_a_preview_each_finished_image_and_the_eta_are_shown_while_drawing(
    browser, server, monkeypatch
):
    """Two batches of one; the engine held at the third step of the second: the first batch's
    image (its seed) is in the gallery, the second's preview beside it, the ETA beside the
    progress; at the end both images and no preview."""
    engine = server["engine"]
    held, release = threading.Event(), threading.Event()
    generate = engine.generate

    def holding(req, progress=None, **kw):
        def step(done, total):
            progress(done, total)
            if done == STEPS + 3:
                held.set()
                assert release.wait(60)

        return generate(req, step, **kw)

    monkeypatch.setattr(engine, "generate", holding)
    page, failed = open_page(browser, server)
    page.fill("#txt2img-prompt textarea", "an anime girl")
    page.fill("#txt2img-seed input", "21")
    page.fill("#txt2img-batch-count input[type=number]", "2")
    page.press("#txt2img-batch-count input[type=number]", "Enter")
    page.click("#txt2img-generate")
    try:
        assert held.wait(60)
        page.wait_for_function(  # the preview: a picture of the drawing's size, loaded
            """() => { const i = document.querySelector('#txt2img-live-preview img');
                       return i && i.complete && i.naturalWidth === 64; }""",
            timeout=30_000,
        )
        assert _captions(page) == ["seed 21"]  # the first batch, before the job ends
        assert wait_for_images(page, "txt2img") == [64]
        assert page.is_disabled("#txt2img-generate")  # the job is still running
        page.wait_for_function(
            "() => /ETA \\d+\\.\\d s/.test(document.querySelector('#txt2img-gallery').innerText)",
            timeout=30_000,
        )
    finally:
        release.set()
    page.wait_for_selector("#txt2img-generate:not([disabled])", timeout=60_000)
    assert _captions(page) == ["seed 21", "seed 22"]
    page.wait_for_selector("#txt2img-live-preview img", state="detached", timeout=30_000)
    # a preview replaced by the next before its file arrived is aborted by the browser, no fault
    assert [url for url in failed if not url.endswith("/image.webp")] == []
