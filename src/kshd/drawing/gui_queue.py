"""The queue position and a realistic estimate beside Generate: Gradio's queue messages, with
the time computed from what is queued ahead and the engine's measured pace (`drawing.pace`)
instead of Gradio's mean of earlier jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.server_messages import (
    EstimationMessage,
    ProcessCompletedMessage,
    ProcessStartsMessage,
)
from gradio.utils import error_payload

from kshd.drawing.pace import Pace, work

log = logging.getLogger(__name__)


def job_units(names: tuple[str, ...] | None, payload: list | None) -> float:
    """A queued drawing's work from its inputs as sent (`names`: its Request fields in order);
    0 for anything else in the queue (a model switch) or what cannot be read."""
    if names is None or payload is None:
        return 0.0
    v = dict(zip(names, payload, strict=False))
    try:
        strength = float(v["strength"]) if "image" in names else 1.0
        images = int(v["batch_count"]) * int(v["batch_size"])
        return work(float(v["steps"]), images, int(v["width"]), int(v["height"]), strength)
    except (KeyError, TypeError, ValueError):
        return 0.0


def eta(event: Any, waiting: list, pace: Pace, names: dict[str, tuple[str, ...]]) -> float | None:
    """Seconds until `event`'s result: the job in progress's rest, the jobs ahead, its own."""

    def units(e: Any) -> float:
        return job_units(names.get(e.fn.api_name), e.data.data if e.data is not None else None)

    rank = next((i for i, e in enumerate(waiting) if e is event), None)
    ahead = waiting[: rank + 1] if rank is not None else [event]
    own = pace.seconds(sum(units(e) for e in ahead))
    return None if own is None else own + pace.seconds_left()


def estimate_queue(queue: Any, pace_of: Callable[[], Pace], names: dict[str, tuple[str, ...]]):
    """Rewrite the estimates Gradio's `queue` sends (an instance-level wrapper of its
    `send_message`, as `gui_parts` wraps components): queue position messages and the one a job
    gets as it starts. Before the first measured drawing Gradio's own figure stands."""
    send = queue.send_message

    def send_message(event, message) -> None:
        pace = pace_of()
        if isinstance(message, EstimationMessage) and message.rank is not None:
            waiting = queue.event_queue_per_concurrency_id[event.concurrency_id].queue
            message.rank_eta = eta(event, list(waiting), pace, names) or message.rank_eta
        elif isinstance(message, ProcessStartsMessage) and event.fn.api_name in names:
            own = pace.seconds(job_units(names[event.fn.api_name], event.data.data))
            message.eta = own if own is not None else message.eta
        send(event, message)

    queue.send_message = send_message


async def take_out(queue: Any, owner: str | None, api_name: str, said: str) -> bool:
    """Take `owner`'s waiting `api_name` jobs out of Gradio's `queue` and end each as failed
    with `said` (as Gradio's own /cancel ends one, so the page and a client hear of it);
    False when it has none waiting. Runs on the server's event loop (an async handler)."""
    if owner is None:
        return False
    async with queue.delete_lock:
        mine = [
            (waiting.queue, event)
            for waiting in queue.event_queue_per_concurrency_id.values()
            for event in waiting.queue
            if event.session_hash == owner and event.fn.api_name == api_name
        ]
        for waiting, event in mine:
            waiting.remove(event)
            queue.event_ids_to_events.pop(event._id, None)  # noqa: SLF001
    error = gr.Error(said, title="Interrupted", visible=False, print_exception=False)
    for _, event in mine:
        queue.send_message(event, ProcessCompletedMessage(output=error_payload(error, True),
                                                          success=False))  # fmt: skip
    return bool(mine)
