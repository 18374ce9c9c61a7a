"""The studio's endpoints through gradio_client: Interrupt and Skip, the queue's
estimate, the LoRA and base-model switches, PNG Info; the page itself: test_gui_studio.py."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from kshd.adapters.files import DIFFUSERS_FILE
from kshd.drawing.gui_modes import TAB_FIELDS

from .helpers.studio import studio_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    yield from studio_server(tiny_models, random_lora, tmp_path_factory.mktemp("api_outputs"))


def test_client_interrupt_and_skip_endpoints(server, monkeypatch):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/txt2img", "/img2img", "/txt2img_interrupt", "/txt2img_skip"} <= names
    assert client.predict(api_name="/txt2img_interrupt") == "interrupt: nothing of yours is drawing"
    engine, drawing, asked = server["engine"], threading.Event(), threading.Event()
    generate = engine.generate

    def signalling(req, progress=None, **kw):
        """Says when the second batch's first step is drawn, and holds it until Skip was asked:
        the skip lands in that batch, however fast the machine."""

        def seen(done, total):
            progress(done, total)
            if done == req.steps + 1:
                drawing.set()
                assert asked.wait(60)

        return generate(req, seen, **kw)

    monkeypatch.setattr(engine, "generate", signalling)
    job = client.submit(prompt="a girl", steps=4, seed=9, width=64, height=64, batch_count=3,
                        batch_size=1, api_name="/txt2img")  # fmt: skip
    assert drawing.wait(60)
    assert client.predict(api_name="/txt2img_skip") == "skip: asked"
    asked.set()
    gallery, info, _ = job.result(timeout=120)
    assert [g["caption"] for g in gallery] == ["seed 9", "seed 11"]  # the second one skipped


def test_the_queue_estimate_follows_the_work_queued_ahead(server, monkeypatch):
    """Two jobs wait behind one held at its third step: each is told the rest of that job plus
    the work queued up to it at the measured pace, so the one with twice the steps waits twice
    as long for its own part (Gradio's mean of earlier jobs gives both the same)."""
    from gradio_client import Client

    from kshd.drawing.pace import work

    client = Client(server["url"], verbose=False)
    engine, queue = server["engine"], server["ui"]._queue
    held, release = threading.Event(), threading.Event()
    told = {4: threading.Event(), 8: threading.Event()}  # a queued job's estimate was sent
    generate, estimates = engine.generate, {}

    def holding(req, progress=None, **kw):
        def seen(done, total):
            progress(done, total)
            if req.steps == 6 and done == 3:
                held.set()
                assert release.wait(60)

        return generate(req, seen, **kw)

    send = queue.send_message

    def recording(event, message):
        send(event, message)  # rewritten by the studio's estimate on the way
        data = event.data.data if event.data is not None else None
        if message.msg == "estimation" and message.rank is not None and data:
            steps = data[TAB_FIELDS.index("steps")]
            estimates[steps] = message.rank_eta
            if steps in told:
                told[steps].set()

    monkeypatch.setattr(engine, "generate", holding)
    monkeypatch.setattr(queue, "send_message", recording)
    common = {"prompt": "a girl", "seed": 1, "width": 64, "height": 64, "batch_count": 1,
              "batch_size": 1, "api_name": "/txt2img"}  # fmt: skip
    first = client.submit(steps=6, **common)
    try:
        assert held.wait(60)
        jobs = []
        for steps in (4, 8):  # in this order in the queue
            jobs.append(client.submit(steps=steps, **common))
            assert told[steps].wait(60)
        pace = engine.pace
        left, unit = pace.seconds_left(), pace.seconds(work(1, 1, 64, 64))
        assert left > 0 and unit > 0 and math.isclose(left, 3 * unit)  # 3 of 6 steps left
        assert math.isclose(estimates[4], left + 4 * unit)
        assert math.isclose(estimates[8], left + 12 * unit)  # behind the 4-step job
    finally:
        release.set()
    first.result(timeout=120)
    for job in jobs:
        job.result(timeout=120)


def test_client_switches_the_lora_and_the_parameters_say_so(server, tmp_path):
    """Checkpoint, none, a file typed in that the list does not hold; a missing one is refused
    by the field's label and leaves the LoRA in use."""
    import shutil

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    base, lora, checkpoint = server["base"], str(server["lora"]), str(server["checkpoint"])

    def draw() -> tuple[np.ndarray, str]:
        gallery, info, _ = client.predict(prompt="a girl", seed=5, steps=3, width=64, height=64,
                                          batch_size=1, api_name="/txt2img")  # fmt: skip
        return np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16), info

    with_lora, info = draw()
    assert 'Lora hashes: "lora' not in info and "Lora hashes" in info
    try:
        assert "LoRA: none" in client.predict(base, "", api_name="/set_model")
        alone, info = draw()
        assert "Lora hashes" not in info and np.abs(alone - with_lora).max() > 0
        said = client.predict(base, checkpoint, api_name="/set_model")
        assert "checkpoint-8" in said
        again, info = draw()
        assert 'Lora hashes: "checkpoint-8: ' in info and np.array_equal(again, with_lora)
        refused = "LoRA: /no-such.safetensors: a LoRA must be an existing .safetensors file"
        with pytest.raises(AppError, match=refused + ".*in use: checkpoint-8"):
            client.predict(base, "/no-such.safetensors", api_name="/set_model")
        still, info = draw()
        assert 'Lora hashes: "checkpoint-8: ' in info and np.array_equal(still, with_lora)
        mine = tmp_path / "mine.safetensors"  # in no folder of the list
        shutil.copy(server["lora"] / DIFFUSERS_FILE, mine)
        assert "**mine**" in client.predict(base, str(mine), api_name="/set_model")
        typed, info = draw()
        assert 'Lora hashes: "mine: ' in info and np.array_equal(typed, with_lora)
    finally:
        client.predict(base, lora, api_name="/set_model")


def test_client_png_info_endpoint(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/png_info", "/set_model", "/img2img_interrupt", "/img2img_skip"} <= names
    text = "1girl\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 64x64, Clip skip: 2, Hires steps: 1"
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png", pnginfo=info)
    said = client.predict(handle_file(str(tmp_path / "a.png")), api_name="/png_info")
    assert tuple(said) == (text, "Not used here: Hires steps.")  # Clip skip is drawn at


def test_client_switches_the_base_model_and_refuses_one_that_cannot_load(server):
    """Another base (the world's, another model folder) draws another image; a folder that is
    no model is refused by its label and leaves the one in use."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from kshd_world.learning import WORLD_SD

    client = Client(server["url"], verbose=False)
    base, lora = server["base"], str(server["lora"])

    def draw() -> np.ndarray:
        gallery, _, _ = client.predict(prompt="a girl", seed=5, steps=3, width=64, height=64,
                                       batch_size=1, lora_scale=0, api_name="/txt2img")  # fmt: skip
        return np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16)

    tiny = draw()
    try:
        said = client.predict(str(WORLD_SD), "", api_name="/set_model")
        assert "LoRA: none" in said
        world = draw()
        assert np.abs(world - tiny).mean() > 10  # another model drew it
        with pytest.raises(AppError, match="Base model: "):
            client.predict("/no/such/model", "", api_name="/set_model")
        assert np.array_equal(draw(), world)  # the world's base is still the one drawing
    finally:
        client.predict(base, lora, api_name="/set_model")
    assert np.array_equal(draw(), tiny)  # and back


def test_client_prompt_lora_tags_and_png_info_s_not_here(server, tmp_path):
    """`<lora:checkpoint-8:1>` typed in the prompt, with no LoRA chosen, draws that checkpoint
    (its strength from train.alpha / rank: it records none) and says it in `Lora hashes`; an
    unknown name draws on without it; PNG Info says which of an A1111 file's model and LoRAs
    are not here."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    base, lora = server["base"], str(server["lora"])

    def draw(prompt: str) -> tuple[np.ndarray, str]:
        gallery, info, _ = client.predict(prompt=prompt, seed=5, steps=3, width=64, height=64,
                                          batch_size=1, api_name="/txt2img")  # fmt: skip
        return np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16), info

    with_lora, _ = draw("a girl")
    try:
        client.predict(base, "", api_name="/set_model")
        alone, _ = draw("a girl")
        tagged, info = draw("a girl <lora:checkpoint-8:1> <lora:nowhere:0.5>")
        assert np.array_equal(tagged, with_lora) and not np.array_equal(tagged, alone)
        assert 'Lora hashes: "checkpoint-8: ' in info and "<lora:checkpoint-8:1>" in info
    finally:
        client.predict(base, lora, api_name="/set_model")
    text = ("1girl <lora:foo:0.7>\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 64x64, "
            'Model hash: abc123, Model: anything-v5, Lora hashes: "foo: 0123456789ab"')  # fmt: skip
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (64, 64)).save(tmp_path / "a1111.png", pnginfo=info)
    said = client.predict(handle_file(str(tmp_path / "a1111.png")), api_name="/png_info")
    assert tuple(said) == (text, "not here: model anything-v5 [abc123]; LoRA foo [0123456789ab]")
