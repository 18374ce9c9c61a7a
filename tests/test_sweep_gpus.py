"""`kshd sweep --gpus`: one DVC queue worker per GPU, each experiment on one GPU, never two on one
GPU at once.

DVC's queue does the scheduling (a worker runs one experiment at a time and prefetches none);
what is ours is starting each worker with its own CUDA_VISIBLE_DEVICES, and refusing what would
break that. The e2e test runs the real machinery with two fake GPUs on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kshd.cli import main as kshd
from kshd.config.errors import UserError
from kshd.experiments import gpus as gpus_module
from kshd.experiments import sweep
from kshd.experiments.gpus import (
    check_gpus,
    parse_gpus,
    pick_gpus,
    refuse_running_workers,
    visible_gpus,
    worker_env,
)
from kshd.experiments.sweep import THREAD_VARS, cpu_cores, run_sweep

from .helpers.dvc_repo import dvc_env, experiments_shown, run_ok

UUID = "GPU-8f3a2b1c-0d4e-4f5a-9b6c-7d8e9f0a1b2c"


def test_a_gpu_list_is_indices_or_uuids_each_once():
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus(" 2, 3 ") == ["2", "3"]
    assert parse_gpus(f"{UUID},MIG-1a2b3c4d-5e6f") == [UUID, "MIG-1a2b3c4d-5e6f"]
    for garbled in ("", "0,,1", "a", "0;1", "-1", "0 1", "cuda:0"):
        with pytest.raises(UserError, match=r"^--gpus .*e\.g\. --gpus 0,1"):
            parse_gpus(garbled)
    with pytest.raises(UserError, match="^--gpus 0,1,0: GPU 0 listed twice"):
        parse_gpus("0,1,0")
    with pytest.raises(UserError, match="^--gpus ''"):
        check_gpus([])


def test_gpus_and_jobs_must_agree_and_the_default_is_every_visible_gpu():
    four = lambda: ["0", "1", "2", "3"]  # noqa: E731
    assert pick_gpus(["1", "3"], None, four) == ["1", "3"]
    assert pick_gpus(["1", "3"], 2, four) == ["1", "3"]
    with pytest.raises(UserError, match="^--gpus 1,3 runs 2 experiments at once.*-j says 3"):
        pick_gpus(["1", "3"], 3, four)
    assert pick_gpus(None, None, four) == ["0", "1", "2", "3"]
    assert pick_gpus(None, 2, four) == ["0", "1"]  # -j alone: the first N GPUs
    with pytest.raises(UserError, match=r"^-j 5 with 4 GPUs .*--gpus"):
        pick_gpus(None, 5, four)
    with pytest.raises(UserError, match="^-j 0"):
        pick_gpus(None, 0, four)
    # no GPU: the CPU way, `-j` workers in one environment (not even asked for the GPUs' list)
    assert pick_gpus(None, 3, lambda: []) == []
    assert pick_gpus(None, None, lambda: []) == []
    # explicit GPUs are pinned whatever this machine has (a CPU-only one: the e2e test's case)
    assert pick_gpus(["0", "1"], None, lambda: []) == ["0", "1"]


def test_visible_gpus_as_cuda_reads_its_variable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus({}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "5,7"}) == ["5", "7"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": f"{UUID}"}) == [UUID]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,-1,4"}) == ["3"]  # CUDA stops at -1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == []  # set, but no CUDA here


def test_a_worker_s_environment_has_its_gpu_and_this_environment_s_dvc_first(monkeypatch):
    monkeypatch.setattr(gpus_module, "dvc_executable", lambda: "/venv/bin/dvc")
    env = worker_env({"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1", "A": "b"}, "1")
    assert env == {"PATH": f"/venv/bin{os.pathsep}/usr/bin", "CUDA_VISIBLE_DEVICES": "1", "A": "b"}


class _Queue:
    def __init__(self, answers):
        self.answers = list(answers)

    def worker_status(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _fake_repo(monkeypatch, answers) -> None:
    queue = _Queue(answers)

    class Repo:
        def __init__(self, root):
            self.experiments = type("E", (), {"celery_queue": queue})()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("dvc.repo.Repo", Repo)


def test_running_workers_are_refused_and_idle_ones_awaited(monkeypatch, tmp_path):
    """Workers already up would take the sweep's experiments with whatever GPUs they have."""
    busy = {"dvc-exp-abc123-1@localhost": [{"id": "t1"}]}
    _fake_repo(monkeypatch, [busy])
    with pytest.raises(UserError, match=r"^--gpus: .*\(dvc-exp-abc123-1@localhost\).*queue stop"):
        refuse_running_workers(tmp_path, wait_s=5, poll=0)
    idle = {"dvc-exp-abc123-1@localhost": []}
    _fake_repo(monkeypatch, [idle, idle, {}])  # a sweep just ended: its worker stops soon
    refuse_running_workers(tmp_path, wait_s=5, poll=0)
    _fake_repo(monkeypatch, [idle])  # never stops
    with pytest.raises(UserError, match="already running"):
        refuse_running_workers(tmp_path, wait_s=0.05, poll=0.01)


def test_the_cli_refuses_bad_gpu_lists_in_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no repository: refused before DVC is asked anything
    for argv, said in (
        (["--gpus", "0,0"], "kshd sweep: --gpus 0,0: GPU 0 listed twice"),
        (["--gpus", "0,1", "-j", "3"], "kshd sweep: --gpus 0,1 runs 2 experiments at once"),
        (["--gpus", "x"], "kshd sweep: --gpus 'x': expected a comma list of GPUs"),
    ):
        caplog.clear()
        with pytest.raises(SystemExit) as end:
            kshd(["sweep", "-S", "x=1,2", *argv])
        assert end.value.code == 2
        [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert line.startswith(said) and "\n" not in line


# The stage of the e2e test: plain Python. It notes that it started in a folder all experiments
# share, then waits until two have started: run one at a time, the first would wait in vain.
STAGE = """\
import json, os, pathlib, sys, time
start = time.time()
shared = pathlib.Path(os.environ["KSHD_TEST_RENDEZVOUS"])
(shared / f"started-{os.getpid()}").touch()
while len(list(shared.glob("started-*"))) < 2:
    if time.time() - start > 120:
        sys.exit("alone for 120 s: no other experiment ran beside this one")
    time.sleep(0.1)
time.sleep(1.0)  # holds its GPU a while: a second experiment on it would overlap
seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
seen |= {"pid": os.getpid(), "start": start, "end": time.time()}
json.dump(seen, open("seen.json", "w"))
"""


def _pinned_repo(root: Path) -> Path:
    root.mkdir()
    (root / "stage.py").write_text(STAGE)
    (root / "params.yaml").write_text("x: 0\ntracking:\n  group: null\n")
    stage = {
        "cmd": "python stage.py",
        "deps": ["stage.py"],
        "params": ["x"],
        "metrics": [{"seen.json": {"cache": False}}],
    }
    (root / "dvc.yaml").write_text(json.dumps({"stages": {"seen": stage}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        run_ok(cmd, root)
    run_ok(["git", "commit", "-qm", "pinned"], root)
    return root


@pytest.mark.slow
@pytest.mark.e2e
def test_four_experiments_on_two_gpus_one_at_a_time_each(tmp_path, monkeypatch):
    """Through `run_sweep` and DVC's real queue with two fake GPUs: every experiment's stage saw
    exactly one GPU, both GPUs ran one, two ran at once (the rendezvous), and no GPU ever ran
    two at once; the CPU cores are split between the two, as for `-j 2`."""
    repo = _pinned_repo(tmp_path / "repo")
    shared = tmp_path / "rendezvous"
    shared.mkdir()
    for key, value in dvc_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KSHD_TEST_RENDEZVOUS", str(shared))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sweep, "cuda_available", lambda: False)  # on a GPU machine too
    compared = []
    monkeypatch.setattr(sweep, "build_comparison", lambda root, out, names: compared.extend(names))

    assert run_sweep(repo, ["x=1,2,3,4"], group="pinned", gpus=["0", "1"]) == 0

    seen = [data["metrics"]["seen.json"]["data"] for data in experiments_shown(repo).values()]
    assert len(seen) == 4 and len(compared) == 4
    by_gpu = {gpu: sorted((s["start"], s["end"]) for s in seen if s["CUDA_VISIBLE_DEVICES"] == gpu)
              for gpu in ("0", "1")}  # fmt: skip
    assert sum(map(len, by_gpu.values())) == 4  # each saw "0" or "1", nothing else
    assert all(by_gpu.values()), by_gpu  # both GPUs used
    for runs in by_gpu.values():
        for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
            assert end <= start, by_gpu  # never two at once on one GPU
    spans = [(s["start"], s["end"]) for s in seen]
    assert max(sum(a <= t <= b for a, b in spans) for t, _ in spans) <= 2, spans
    assert len(list(shared.glob("started-*"))) == 4
    share = str(max(1, cpu_cores() // 2))
    assert {s["OMP_NUM_THREADS"] for s in seen} == {share}
