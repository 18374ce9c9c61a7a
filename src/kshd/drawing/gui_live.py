"""The studio's drawing as it happens: the engine draws on a thread of its own while the page's
handler (a generator: Gradio streams each `yield` to the page) shows each batch as it ends in
the gallery, the live preview of the batch in progress (`drawing.preview`) beside it, and the
ETA the queue computes (the engine's measured pace, `drawing.pace`) beside the progress.

Every Gradio call (progress, yields) stays on the handler's own thread; the drawing thread only
puts what happened in a queue. A script's call (`/txt2img` through gradio_client) gets the last
yield: the finished drawing, as before (the preview goes out through a gr.State, which the API
leaves out, as it leaves out the tab's requests)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from kshd.drawing.engine import INTERRUPT, Engine, Generated
from kshd.drawing.pace import Pace
from kshd.drawing.request import Request

log = logging.getLogger(__name__)
PROGRESS, PREVIEW, BATCH, END = "progress", "preview", "batch", "end"


def eta_said(pace: Pace) -> str:
    """The progress's words: what the job in progress has left at the measured pace (nothing
    said before a step was measured)."""
    if pace.per_unit is None:
        return "drawing"
    return f"drawing · ETA {pace.seconds_left():.1f} s"


def _draw(engine: Engine, req: Request, owner: str | None, events: queue.Queue, done: dict):
    """The drawing thread: the engine's callbacks as events; its result or its error kept."""
    try:
        done["result"] = engine.generate(
            req,
            lambda d, t: events.put((PROGRESS, (d, t))),
            owner=owner,
            preview=lambda image, d, t: events.put((PREVIEW, (image, d, t))),
            finished=lambda out: events.put((BATCH, replace(out, images=list(out.images),
                                                             seeds=list(out.seeds),
                                                             infotexts=list(out.infotexts),
                                                             paths=list(out.paths)))),
        )  # fmt: skip
    except Exception as exc:  # raised on the handler's thread, as if drawn there
        done["error"] = exc
    finally:
        events.put((END, None))


def live_job(
    engine: Engine,
    req: Request,
    progress: Callable[..., Any],
    owner: str | None,
    outputs: Callable[[Generated], tuple],
    notes: Callable[[list[str]], None],
) -> Iterator[tuple]:
    """Yield the tab's outputs (`outputs` of what is finished) and the live preview (None
    when there is none: after a batch, at the end) as each batch ends and at each preview, the
    drawing's outputs last, its `notes` said just before. A page that goes away (the generator
    closed) interrupts its job."""
    events: queue.Queue = queue.Queue()
    done: dict = {}
    thread = threading.Thread(target=_draw, args=(engine, req, owner, events, done),
                              name="kshd-drawing", daemon=True)  # fmt: skip
    thread.start()
    so_far = Generated([], [], [], [])
    try:
        while (event := events.get())[0] != END:
            kind, value = event
            if kind == PROGRESS:
                progress(value, desc=eta_said(engine.pace), unit="steps")
                continue
            if kind == BATCH:
                so_far = value
            yield (*outputs(so_far), value[0] if kind == PREVIEW else None)
    finally:
        if thread.is_alive():  # closed early: the page left
            log.info("the page of %s left: its job interrupted", owner)
            engine.stop(INTERRUPT, owner=owner)
            thread.join()
    if "error" in done:
        raise done["error"]
    notes(done["result"].notes)  # before the last yield: after it the page has stopped listening
    yield (*outputs(done["result"]), None)
