"""How long a drawing takes, measured from the drawings themselves: the queue's estimate.

Gradio's own estimate is the mean duration of every earlier job of the endpoint, whatever its
steps, size or batch, so after one 150-step job a 4-step one is said to take as long (and the
first job, with the model's warm-up, inflates it). Here a job's work is counted in steps x
images x megapixels, and the engine measures seconds per unit of it between the step callbacks
of each drawing (the first step of each batch left out: it carries the warm-up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MEGA = 1_000_000
SMOOTHING = 0.3  # weight of the newest step in the running mean (steps vary a little)


def work(steps: float, images: int, width: int, height: int, strength: float = 1.0) -> float:
    """A job's units: denoising steps (image-to-image runs `steps x strength` of them, as
    diffusers does) x images x megapixels."""
    run = int(steps * strength) if strength < 1 else steps
    return max(run, 0) * images * width * height / MEGA


class Pace:
    """Seconds per unit of work, and what the job in progress has left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.per_unit: float | None = None  # None until a drawing was measured
        self._lock = threading.Lock()
        self._left = 0.0  # units the job in progress has still to draw
        self._last: tuple[int, float] | None = None  # (steps done, when) in this batch

    def start(self, units: float) -> None:
        with self._lock:
            self._left, self._last = units, None

    def step(self, done: int, per_batch: int, unit: float) -> None:
        """`done` steps of the job drawn (`per_batch` steps a batch, `unit` units a step)."""
        now = self.clock()
        with self._lock:
            self._left = max(self._left - unit, 0.0)
            first_of_batch = (done - 1) % per_batch == 0
            if self._last is not None and not first_of_batch and done > self._last[0]:
                took = (now - self._last[1]) / (done - self._last[0]) / unit
                old = self.per_unit
                self.per_unit = took if old is None else old + SMOOTHING * (took - old)
            self._last = (done, now)

    def finish(self) -> None:
        with self._lock:
            self._left, self._last = 0.0, None

    def seconds(self, units: float) -> float | None:
        """How long `units` of work take at the measured pace (None before any measure)."""
        return None if self.per_unit is None else units * self.per_unit

    def seconds_left(self) -> float:
        """What the job in progress has left (0 when none runs or nothing was measured)."""
        with self._lock:
            return self._left * (self.per_unit or 0.0)
