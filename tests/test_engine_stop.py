"""Interrupt and Skip (the studio's buttons, `Engine.stop`): asked from the progress callback at
a known step, so each test knows exactly which batch was in flight."""

from __future__ import annotations

import pytest

from kshd.config.compose import defaults
from kshd.drawing.engine import INTERRUPT, SKIP, Engine, EngineSettings
from kshd.drawing.request import Request

STEPS = 3
DRAW = dict(steps=STEPS, width=64, height=64, sampler="euler", seed=40, batch_count=3,
            positive_prefix="", negative_prefix="")  # fmt: skip


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory):
    return Engine(
        EngineSettings(
            str(tiny_models["sd"]),
            outputs_dir=str(tmp_path_factory.mktemp("outputs")),
            device="cpu",
            limits=defaults("generate.limits"),
        )
    )


def _draw_stopping(engine: Engine, how: str, in_batch: int, owner: str | None = "page-1"):
    """Draw 3 batches of 1; at the second step of batch `in_batch` (1-based) ask `how`."""
    asked = []

    def progress(done: int, total: int) -> None:
        if done == (in_batch - 1) * STEPS + 2 and not asked:
            asked.append(engine.stop(how, owner=owner))

    result = engine.generate(Request("a girl", **DRAW), progress, owner="page-1")
    return result, asked


def test_interrupt_keeps_the_finished_batches_and_draws_no_more(engine):
    whole = engine.generate(Request("a girl", **DRAW), save=False)
    result, asked = _draw_stopping(engine, INTERRUPT, in_batch=2)
    assert asked == [True] and result.stopped == INTERRUPT
    assert result.seeds == [40] and len(result.images) == len(result.paths) == 1
    assert result.images[0].tobytes() == whole.images[0].tobytes()  # the finished one, as drawn
    assert "Seed: 40" in result.infotexts[0]


def test_skip_drops_the_batch_in_flight_and_goes_on(engine):
    result, asked = _draw_stopping(engine, SKIP, in_batch=2)
    assert asked == [True] and result.stopped == SKIP
    assert result.seeds == [40, 42] and len(result.paths) == 2


def test_a_stop_for_another_page_or_with_nothing_drawing_does_nothing(engine):
    result, asked = _draw_stopping(engine, INTERRUPT, in_batch=1, owner="page-2")
    assert asked == [False] and result.stopped is None and result.seeds == [40, 41, 42]
    assert engine.stop(INTERRUPT) is False  # nothing drawing now
    again = engine.generate(Request("a girl", **{**DRAW, "batch_count": 1}), save=False)
    assert again.seeds == [40]  # a stop asked between jobs does not reach the next one
    with pytest.raises(ValueError, match="stop"):
        engine.stop("pause")
