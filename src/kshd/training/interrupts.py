"""Ctrl-C during long work: finish the unit in flight, save, then stop (a second Ctrl-C: now)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: raised after the step in flight finished and a checkpoint of it was written."""


@contextmanager
def deferred_interrupt() -> Iterator[dict]:
    """Ctrl-C sets a flag the loop reads between optimizer steps; a second Ctrl-C stops at once.

    Stopping mid-step would leave weights and step counter out of step, so the resumed run would
    not equal an uninterrupted one.
    """
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True
        log.warning("Ctrl-C: finishing this step and saving a checkpoint (again to stop now)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
