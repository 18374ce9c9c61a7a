"""Through DVC: `dvc repro train` after a crash resumes training; another experiment starts afresh.

Both run the pipeline up to the train stage (DVC's targets): what follows it is not the point."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .conftest import quick_dvc_params
from .helpers.dvc_repo import clone_of_this_checkout, demo_steps, dvc_env, link_tiny_models, run_ok
from .helpers.events import Child

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _demo(**train) -> list[str]:
    """`dvc exp run` arguments of the demo made quick (its mechanics, not its learning), a
    checkpoint every 4 steps, with these train.* values, up to the train stage."""
    values = {"checkpointing_steps": 4} | train
    keys = [f"train.{k}" for k in values]
    sets = [a for k, v in values.items() for a in ("-S", f"train.{k}={v}")]
    return ["train", "-S", "+experiment=demo", *sets, *quick_dvc_params(*keys)]


LONG = _demo(epochs=12)  # long enough for a kill to land between checkpoints


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_models):
    """A fresh clone with the demo's tiny models, as `make demo` builds them first."""
    repo = clone_of_this_checkout(tmp_path_factory.mktemp("repo"))
    link_tiny_models(repo, tiny_models)
    return repo


def _metrics(repo):
    return json.loads((repo / "reports/train/metrics.json").read_text(encoding="utf-8"))


def test_dvc_repro_after_a_crash_resumes_training(repo):
    dvc = Child(["dvc", "exp", "run", *LONG], repo, dvc_env(), start_new_session=True)
    try:
        dvc.wait_for(r"checkpoint-8 saved", timeout=900)  # the stage's log line, passed through
    finally:
        os.killpg(dvc.proc.pid, signal.SIGKILL)  # DVC and the stage it runs
        dvc.finish()
    marker = repo / "models/checkpoints/checkpoint-8/state.json"
    assert marker.exists(), "the kill should land after checkpoint-8"
    assert not (repo / "reports/train/metrics.json").exists(), "the kill should land mid-training"
    out = run_ok(["dvc", "repro", "train"], repo)  # params.yaml holds the experiment's values
    log = out.stdout + out.stderr
    assert "Running stage 'train'" in log
    for stage in ("prepare", "caption", "dataset"):
        assert f"'{stage}' didn't change" in log, log
    metrics = _metrics(repo)
    assert metrics["resumed_from"].startswith("checkpoint-")
    assert metrics["steps"] == demo_steps(repo, batch_size=2, epochs=12) > 8


def test_an_experiment_with_other_params_does_not_continue_its_checkpoints(repo):
    assert (repo / "models/checkpoints").is_dir()  # left by the previous run (persist: true)
    # Another learning rate, and few enough epochs that a continued run would have nothing left.
    run_ok(["dvc", "exp", "run", *_demo(epochs=4, learning_rate=5e-3)], repo)
    metrics = _metrics(repo)
    assert metrics["resumed_from"] is None
    assert metrics["steps"] == demo_steps(repo, batch_size=2, epochs=4)
