"""The suite's own scheduling (tests/helpers/parallel.py): the scheduler, driven as xdist's
controller drives it (an `alone` test should wait for the other worker's short test, not for a
long file), the split of the cores that every worker and its children keep to, and the selection
bench/suite.py times today's suite on."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from .helpers.parallel import (
    ALONE_FILES,
    AloneFirstScheduling,
    _threads,
    quickest_unit,
    set_threads,
)

ROOT = Path(__file__).resolve().parents[1]
# file -> (its tests, seconds recorded for the whole file)
FILES = {
    "tests/test_alone.py": (["ddp", "plain", "other"], 60.0),
    "tests/test_long.py": (["a", "b", "c"], 300.0),
    "tests/test_mid.py": (["a", "b"], 20.0),
    "tests/test_quick.py": ([f"t{i}" for i in range(4)], 2.0),
}
ALONE = ["tests/test_alone.py::ddp"]


class Worker:
    """What the scheduler sees of an xdist worker: the tests it is sent."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduler(tmp_path) -> tuple[AloneFirstScheduling, list[str]]:
    (tmp_path / ALONE_FILES).write_text(json.dumps(ALONE), encoding="utf-8")
    config = SimpleNamespace(
        getvalue=lambda name: ["2*popen"] if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=False),
        kshd_run_dir=str(tmp_path),
    )
    sched = AloneFirstScheduling(config)
    sched.table = {f: seconds for f, (_, seconds) in FILES.items()}
    # the workers' order: the alone unit, then longest first (pytest_collection_modifyitems)
    collection = [f"{f}::{t}" for f, (tests, _) in FILES.items() for t in tests]
    return sched, collection


def _files(collection: list[str], worker: Worker) -> list[str]:
    return list(dict.fromkeys(collection[i].split("::")[0] for i in worker.sent))


def test_while_an_alone_test_is_ahead_the_other_worker_gets_the_quickest_file(tmp_path):
    sched, collection = _scheduler(tmp_path)
    one, two = Worker("gw0"), Worker("gw1")
    for worker in (one, two):
        sched.add_node(worker)
        sched.add_node_collection(worker, collection)
    sched.schedule()
    assert _files(collection, one) == ["tests/test_alone.py"]
    # not the long file next in the queue: its first test would hold up the alone one
    assert _files(collection, two) == ["tests/test_quick.py"]
    for i in list(two.sent)[:3]:  # the quick file nearly done, the alone test still ahead
        sched.mark_test_complete(two, i)
    assert _files(collection, two) == ["tests/test_quick.py", "tests/test_mid.py"]
    sched.mark_test_complete(one, collection.index(ALONE[0]))  # its plain tests are left
    assert _files(collection, one) == ["tests/test_alone.py", "tests/test_long.py"]  # longest


def test_quickest_is_by_seconds_per_test_and_an_unrecorded_file_counts_as_middling():
    units = {"few": dict.fromkeys("ab", False), "many": dict.fromkeys("abcdefgh", False)}
    assert quickest_unit(units, {"few": 4.0, "many": 8.0}) == "many"  # 1 s a test, not 2
    assert quickest_unit(units, {"many": 80.0}) == "few"  # 10 s a test against 5 / 2 = 2.5


def test_a_worker_s_share_of_threads_holds_for_torch_and_opencv_here_and_in_its_children():
    """OpenCV reads neither of torch's variables: its pool would take every core beside the
    other worker's tests unless OPENCV_FOR_THREADS_NUM says otherwise."""
    import cv2
    import torch

    with _threads(None):  # the worker's counts and variables back afterwards
        set_threads(1)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        code = "import cv2, torch; print(cv2.getNumThreads(), torch.get_num_threads())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.split() == ["1", "1"], out.stderr[-2000:]


def test_the_suite_bench_keeps_an_earlier_commit_s_tests_and_names_the_rest():
    """bench/suite.py times today's suite on an earlier commit's tests: a test parametrized
    since stands for itself by its first case, and an id that matches nothing is reported."""
    spec = importlib.util.spec_from_file_location("suite_select", ROOT / "bench/suite_select.py")
    select = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(select)
    today = ["t.py::a", "t.py::b[adamw]", "t.py::b[prodigy]", "t.py::new"]
    keep, unmatched = select.kept(["t.py::a", "t.py::b", "t.py::renamed"], today)
    assert keep == {"t.py::a", "t.py::b[adamw]"} and unmatched == ["t.py::renamed"]
