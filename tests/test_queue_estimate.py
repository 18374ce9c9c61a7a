"""The queue's estimate: the engine's pace is measured between step callbacks, the
warm-up of each batch's first step left out; a queued job's time follows its steps, images and
size, where Gradio's mean of earlier jobs says the same for every job."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from gradio.server_messages import EstimationMessage, ProcessStartsMessage

from kshd.drawing.gui_modes import IMG2IMG_FIELDS, TAB_FIELDS
from kshd.drawing.gui_queue import estimate_queue, eta, job_units
from kshd.drawing.pace import Pace, work

NAMES = {"txt2img": TAB_FIELDS, "img2img": IMG2IMG_FIELDS}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _job(api_name: str, **fields) -> SimpleNamespace:
    """A queued Gradio event as the queue holds it: its function and its inputs as sent."""
    values = {"steps": 20, "batch_count": 1, "batch_size": 1, "width": 512, "height": 512,
              "strength": 0.75, "image": "in.png", **fields}  # fmt: skip
    payload = [values.get(n) for n in NAMES.get(api_name, ())]
    fn = SimpleNamespace(api_name=api_name)
    return SimpleNamespace(fn=fn, data=SimpleNamespace(data=payload), concurrency_id="engine")


def test_pace_leaves_each_batchs_first_step_out_and_counts_down_the_job():
    clock = Clock()
    pace = Pace(clock)
    unit = 512 * 512 / 1e6  # one 512 px image a step
    pace.start(work(4, 2, 512, 512))  # 4 steps x 2 batches of 1
    assert pace.seconds(1.0) is None and pace.seconds_left() == 0  # nothing measured yet
    for done, at in ((1, 30.0), (2, 30.5), (3, 31.0), (4, 31.5), (5, 40.0), (6, 40.5)):
        clock.now = at  # 30 s of warm-up before step 1, 8.5 s of decode before batch 2
        pace.step(done, 4, unit)
    assert math.isclose(pace.per_unit, 0.5 / unit)  # neither the warm-up nor the decode
    assert math.isclose(pace.seconds_left(), 2 * 0.5)  # two steps of one image left
    assert math.isclose(pace.seconds(work(10, 4, 512, 768)), 10 * 4 * 1.5 * 0.5)
    pace.finish()
    assert pace.seconds_left() == 0


def test_a_queued_job_is_estimated_by_its_own_work_and_the_work_ahead():
    pace = Pace()
    pace.per_unit = 2.0  # seconds per step-image-megapixel
    long, short = _job("txt2img", steps=40), _job("txt2img", steps=10)
    alone = eta(short, [short], pace, NAMES)
    assert math.isclose(eta(long, [long], pace, NAMES), 4 * alone)  # Gradio says the same for both
    behind = eta(short, [long, short], pace, NAMES)
    assert math.isclose(behind, 5 * alone)
    batch = _job("txt2img", steps=10, batch_count=2, batch_size=3, width=512, height=768)
    assert math.isclose(eta(batch, [batch], pace, NAMES), 6 * 1.5 * alone)
    redraw = _job("img2img", steps=10, strength=0.5)  # diffusers runs int(10 * 0.5) steps
    assert math.isclose(eta(redraw, [redraw], pace, NAMES), alone / 2)
    switch = SimpleNamespace(fn=SimpleNamespace(api_name="set_model"), data=None)
    assert math.isclose(eta(short, [switch, short], pace, NAMES), alone)
    assert job_units(TAB_FIELDS, ["a", "", "euler", "x"]) == 0  # unreadable: counted as nothing


@pytest.mark.parametrize("measured", [True, False])
def test_the_queue_messages_carry_the_estimate(measured):
    """Gradio's messages, rewritten on their way out; before any measure Gradio's own stands."""
    pace = Pace()
    pace.per_unit = 1.0 if measured else None
    short = _job("txt2img", steps=10)
    sent = []
    waiting = {"engine": SimpleNamespace(queue=[short])}
    queue = SimpleNamespace(send_message=lambda e, m: sent.append(m),
                            event_queue_per_concurrency_id=waiting)  # fmt: skip
    estimate_queue(queue, lambda: pace, NAMES)
    queue.send_message(short, EstimationMessage(rank=0, queue_size=1, rank_eta=99.0))
    queue.send_message(short, ProcessStartsMessage(eta=99.0))
    own = 10 * 512 * 512 / 1e6
    assert [m.rank_eta if m.msg == "estimation" else m.eta for m in sent] == (
        [own, own] if measured else [99.0, 99.0]
    )
