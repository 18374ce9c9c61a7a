"""The drawing app under load and abuse: a burst of requests, a full queue, hostile file paths."""

from __future__ import annotations

import gc
import re
import socket
import threading
from pathlib import Path

import httpx
import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow
BURST = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _serve(tiny_models, lora, outputs, *overrides):
    from kshd.config.compose import compose_conf
    from kshd.drawing.gui import serve

    port = _free_port()
    cfg = compose_conf(
        [
            "+experiment=demo",
            f"model.pretrained={tiny_models['sd']}",
            f"generate.lora={lora}",
            f"generate.outputs_dir={outputs}",
            f"generate.gui.port={port}",
            "generate.negative_prefix=''",
            "generate.device=cpu",
            *overrides,
        ],
        conf_dir=ROOT / "conf",
    )
    ui, engine = serve(cfg, block=False)
    return f"http://127.0.0.1:{port}/", ui, engine


@pytest.fixture(scope="module")
def app(tiny_models, random_lora, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("load_outputs")
    url, ui, engine = _serve(tiny_models, random_lora, outputs, "generate.gui.queue_size=32")
    yield url, outputs
    with engine.lock:
        ui.close()


def _request(client, i: int, **kw):
    args = dict(prompt=f"an anime girl number {i}", steps=2, seed=100 + i, width=64, height=64)
    return client.submit(**{**args, "batch_size": 1, **kw}, api_name="/txt2img")


class Joins:
    """Counts the requests the server has answered the queue join of: `Client.send_data` returns
    once the POST to the queue came back with an event id, i.e. the request holds its place."""

    def __init__(self, client) -> None:
        self.answered, self._changed, send = 0, threading.Condition(), client.send_data

        def counted(*args, **kwargs):
            try:
                return send(*args, **kwargs)
            finally:
                with self._changed:
                    self.answered += 1
                    self._changed.notify_all()

        client.send_data = counted

    def wait(self, n: int, timeout: float = 60) -> None:
        with self._changed:
            reached = self._changed.wait_for(lambda: self.answered >= n, timeout)
        assert reached, f"the server answered {self.answered} of {n} queue joins in {timeout} s"


def test_a_burst_finishes_in_submission_order_and_memory_settles(app):
    from gradio_client import Client

    url, outputs = app
    client = Client(url, verbose=False)
    for i in range(3):  # warm up: the first drawings allocate what every later one reuses
        _request(client, -1 - i).result(timeout=300)
    gc.collect()
    before = _rss_mb()
    joins, jobs = Joins(client), []
    for i in range(BURST):  # each one in the queue before the next: a defined submission order
        jobs.append(_request(client, i))
        joins.wait(i + 1)
    results = [job.result(timeout=600) for job in jobs]
    gc.collect()
    after = _rss_mb()
    assert all(len(gallery) == 1 for gallery, _, _ in results)
    saved = sorted((outputs / "txt2img").glob("*/*.png"))
    seeds = [int(p.stem.split("-")[1]) for p in saved]
    assert seeds[-BURST:] == [100 + i for i in range(BURST)]  # saved one by one, in order
    assert after - before < 150, f"RSS grew from {before:.0f} MB to {after:.0f} MB"


def test_a_full_queue_refuses_clearly_and_keeps_serving(tiny_models, random_lora, tmp_path):
    from gradio_client import Client

    url, ui, engine = _serve(
        tiny_models, random_lora, tmp_path, "generate.gui.queue_size=2", "generate.steps=12"
    )
    try:
        client = Client(url, verbose=False)
        jobs = [_request(client, i, steps=12, width=128, height=128) for i in range(8)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=600)
                outcomes.append("done")
            except Exception as err:  # gradio_client raises its own types per version
                outcomes.append(str(err))
        refused = [o for o in outcomes if o != "done"]
        assert outcomes.count("done") >= 1 and refused, outcomes
        assert all("queue is full" in o.lower() for o in refused), refused
        gallery, _, _ = _request(client, 99).result(timeout=300)
        assert len(gallery) == 1
    finally:
        with engine.lock:
            ui.close()


TRAVERSALS = [
    "gradio_api/file=/etc/passwd",
    "gradio_api/file=../../../../../../etc/passwd",
    "gradio_api/file=%2Fetc%2Fpasswd",
    "gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "file=/etc/passwd",
    "gradio_api/file=" + str(ROOT / "params.yaml"),
    "static/../../../../etc/passwd",
    "assets/..%2F..%2F..%2Fetc%2Fpasswd",
    "gradio_api/file=/proc/self/environ",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_outputs_is_served(app, path):
    url, _ = app
    response = httpx.get(url + path, timeout=30)
    body = response.text
    assert response.status_code in (400, 403, 404), (response.status_code, body[:200])
    assert "root:" not in body and "trigger_phrase" not in body and "PATH=" not in body


PATHS = "../../../../etc/passwd"
ABUSE = [
    # (endpoint change, words of the error, or None: it must draw and only inside outputs)
    ({"prompt": "x" * 10_000}, "prompt: 10000 characters"),
    # named as the API names them (the page says "Sampling steps", beside the field)
    ({"steps": -5}, "steps: -5 must be a whole number from 1 to 150"),
    ({"steps": 10**9}, "steps: 1000000000 must be a whole number"),
    ({"width": 10**6}, "width: 1000000 must be a whole number from 64 to 2048"),
    ({"sampler": PATHS}, "passwd"),
    (
        {
            "prompt": PATHS,
            "negative_prompt": PATHS,
            "positive_prefix": "/etc/shadow",
            "negative_prefix": "..\\..\\windows\\system32",
        },
        None,
    ),
]


@pytest.mark.parametrize(("change", "error"), ABUSE)
def test_abusive_fields_get_a_clear_error_and_the_server_keeps_serving(app, change, error):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, outputs = app
    client = Client(url, verbose=False)
    before = {p for p in outputs.rglob("*") if p.is_file()}
    if error:
        with pytest.raises(AppError, match=re.escape(error)):
            _request(client, 0, **change).result(timeout=300)
    else:
        gallery, info, _ = _request(client, 0, **change).result(timeout=300)
        assert len(gallery) == 1 and "passwd" in info  # the text is a prompt, nothing else
    new = {p for p in outputs.rglob("*") if p.is_file()} - before
    assert all(p.suffix == ".png" and outputs in p.parents for p in new)
    assert len(new) == (0 if error else 1)
    gallery, _, _ = _request(client, 1).result(timeout=300)
    assert len(gallery) == 1


def test_huge_and_fake_uploads_are_refused(app, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    url, _ = app
    huge = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000)).save(huge)  # 100 Mpx, a few hundred KB on disk
    page = tmp_path / "photo.png"
    page.write_text("<!doctype html><html><body>not a picture</body></html>")
    script = tmp_path / "drawing.jpg"
    script.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    client = Client(url, verbose=False)
    cases = [
        (huge, "crop", "larger than generate.limits.max_upload_pixels"),
        (huge, PATHS, "not in the list of choices"),
        (page, "crop", "HTML"),
        (script, "crop", "not an image"),
    ]
    for path, resize_mode, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(
                image=handle_file(str(path)),
                prompt="a",
                resize_mode=resize_mode,
                api_name="/img2img",
            )
    gallery, _, _ = _request(client, 2).result(timeout=300)
    assert len(gallery) == 1
