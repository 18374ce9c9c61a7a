"""The suite on pytest-xdist workers (`make test`: `-n 2 --dist loadfile`) without oversubscribing.

- Threads: each worker's torch and OpenCV, and every process it starts (OMP_NUM_THREADS,
  MKL_NUM_THREADS, OPENCV_FOR_THREADS_NUM), gets cores // workers threads. Two torch processes
  with a thread per core each on the same cores run several times slower than with the cores
  split (bench/threads.py); OpenCV's pool takes every core unless told.
- Alone: a test marked `alone` (DDP training, a script with thread counts of its own) waits for
  the other workers' tests in flight to end and holds the machine while it runs, with every
  core's threads; the others wait for it (a shared/exclusive file lock around each test).
- Groups: tests marked `xdist_group(name)` (peaks of many GB: "memory") never run at the same
  time, as pytest-xdist's --dist loadgroup would keep them, beside any other test.
- Shared: the tiny models are built once for the run, in a folder the workers share.
- Order: a file's tests stay together on one worker (module fixtures are built once), except
  that the files with an `alone` test are one unit of work for one worker, their `alone` tests
  first (AloneFirstScheduling). While any of them is still to run, the other worker is given the
  quickest file per test left, so that an `alone` test waits for a short test, not a long one;
  then the other files, longest first by the durations recorded in tests/durations.json, so that
  no long file starts last (`--record-durations=PATH` writes such a table from a run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from xdist.scheduler import LoadFileScheduling

from kshd.experiments.sweep import THREAD_VARS, cpu_cores

DURATIONS = Path(__file__).resolve().parents[1] / "durations.json"
ALONE_FILES = "alone-tests.json"  # in the run folder: the `alone` tests' node ids
ALONE_UNIT = "alone"  # the scheduler's name for the unit of those files
UNKNOWN_FILE_S = 5.0  # a file not in the table yet: as a middling one
# torch's counts, and OpenCV's: its own pool reads neither and takes every core
THREADS = (*THREAD_VARS, "OPENCV_FOR_THREADS_NUM")


def worker_count() -> int:
    """How many xdist workers share this machine (1 without xdist)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def set_threads(n: int) -> None:
    """This process's torch and OpenCV threads and those of the processes it starts from now."""
    import cv2
    import torch

    for var in THREADS:
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def split_cpu_cores() -> None:
    """Under xdist: cores // workers threads here and in every child (a smaller count set by
    the caller, e.g. OMP_NUM_THREADS=1, is kept)."""
    if worker_count() < 2:
        return
    share = max(1, cpu_cores() // worker_count())
    set_threads(min([share] + [int(os.environ[v]) for v in THREAD_VARS if v in os.environ]))


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--record-durations",
        metavar="PATH",
        help="write each test file's duration (setup, call and teardown, seconds) as JSON",
    )


def pytest_configure(config) -> None:
    if hasattr(config, "workerinput"):
        split_cpu_cores()
    if config.getoption("--record-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationRecorder(config), "kshd-durations")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist: the `alone` unit first (its `alone` tests, then the rest of its files), then
    the other files, longest first. Every worker collects the same list; the `alone` files and
    tests are written down for the controller's scheduler."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    table = durations_table()
    alone = [i.nodeid for i in items if _alone(i)]
    alone_files = {_file(n) for n in alone}
    unit = _alone_unit([i for i in items if _file(i.nodeid) in alone_files])
    others = [i for i in items if _file(i.nodeid) not in alone_files]
    others.sort(key=lambda i: -table.get(_file(i.nodeid), UNKNOWN_FILE_S))  # stable: in order
    items[:] = unit + others
    folder = run_folder(config)
    if folder is not None:
        written = folder / f"{ALONE_FILES}.{os.environ['PYTEST_XDIST_WORKER']}"
        written.write_text(json.dumps(alone), encoding="utf-8")
        written.replace(folder / ALONE_FILES)  # whole, as every worker writes the same


def durations_table() -> dict[str, float]:
    """Each test file's seconds in a recorded run (tests/durations.json; empty without it)."""
    return json.loads(DURATIONS.read_text(encoding="utf-8")) if DURATIONS.exists() else {}


def quickest_unit(units: dict[str, dict[str, bool]], table: dict[str, float]) -> str:
    """The unit of work (a file and its tests) with the fewest recorded seconds per test."""
    return min(units, key=lambda f: (table.get(f, UNKNOWN_FILE_S) / len(units[f]), f))


def _alone(item) -> bool:
    return item.get_closest_marker("alone") is not None


def _alone_unit(items: list) -> list:
    """The `alone` tests first, file by file, then the other tests of their files; a file whose
    module fixture both kinds use keeps its own order, before them (the fixture is built once,
    by its first test, with the thread count that test's comparisons expect)."""
    files: dict[str, list] = defaultdict(list)
    for item in items:
        files[_file(item.nodeid)].append(item)
    front, shared, back = [], [], []
    for tests in files.values():
        alone = [i for i in tests if _alone(i)]
        rest = [i for i in tests if not _alone(i)]
        if _module_fixtures(alone) & _module_fixtures(rest):
            shared += tests
        else:
            front += alone
            back += rest
    return shared + front + back


def _module_fixtures(items: list) -> set[str]:
    return {
        name
        for item in items
        for name, defs in item._fixtureinfo.name2fixturedefs.items()
        if defs and defs[-1].scope == "module"
    }


class AloneFirstScheduling(LoadFileScheduling):
    """--dist loadfile with the files that hold an `alone` test as one unit of work, so that one
    worker runs those tests one after another; while one of them is still to run, the other
    workers get the quickest file per test (the workers write the `alone` tests down at
    collection, before the controller schedules: the controller collects nothing itself)."""

    def __init__(self, config, log=None) -> None:
        super().__init__(config, log)
        self.table = durations_table()
        self._alone: set[str] | None = None

    @property
    def alone(self) -> set[str]:
        """The `alone` tests' node ids, read once (written before the first scheduling)."""
        if self._alone is None:
            path = Path(self.config.kshd_run_dir) / ALONE_FILES
            self._alone = set(json.loads(path.read_text(encoding="utf-8")))
            self._alone_files = {_file(n) for n in self._alone}
        return self._alone

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return ALONE_UNIT if self.alone and scope in self._alone_files else scope

    def _assign_work_unit(self, node) -> None:
        if self._alone_tests_ahead(node):
            self.workqueue.move_to_end(quickest_unit(self.workqueue, self.table), last=False)
        super()._assign_work_unit(node)

    def _alone_tests_ahead(self, node) -> bool:
        """Whether another worker holds the `alone` unit with an `alone` test still to run."""
        return any(
            not done and nodeid in self.alone
            for other, units in self.assigned_work.items()
            if other is not node
            for nodeid, done in units.get(ALONE_UNIT, {}).items()
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile (make test's) as AloneFirstScheduling; any other mode as xdist's own."""
    if config.getoption("dist") == "loadfile" and hasattr(config, "kshd_run_dir"):
        return AloneFirstScheduling(config, log)
    return None


class DurationRecorder:
    """Sums each file's phases from the reports (on the xdist controller: every worker's)."""

    def __init__(self, config) -> None:
        self.path = Path(config.getoption("--record-durations"))
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report) -> None:
        self.seconds[_file(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        table = {k: round(v, 1) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
        self.path.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


class MachineLock:
    """Shared by every test, exclusive for an `alone` one. A turnstile lock taken before the
    room keeps a waiting `alone` test from being starved by the other worker's next tests."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.turnstile = (folder / "turnstile.lock").open("a+")
        self.room = (folder / "room.lock").open("a+")

    @contextlib.contextmanager
    def held(self, alone: bool) -> Iterator[None]:
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)


_lock: MachineLock | None = None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """On the xdist controller: one folder for all of the run's workers (locks, tiny models)."""
    config = node.config
    if not hasattr(config, "kshd_run_dir"):
        config.kshd_run_dir = tempfile.mkdtemp(prefix="kshd-run-")
    node.workerinput["kshd_run_dir"] = config.kshd_run_dir


def pytest_unconfigure(config) -> None:
    if hasattr(config, "kshd_run_dir"):
        shutil.rmtree(config.kshd_run_dir, ignore_errors=True)


def run_folder(config) -> Path | None:
    """A folder every xdist worker of this run shares (None without xdist)."""
    folder = getattr(config, "workerinput", {}).get("kshd_run_dir")
    return Path(folder) if folder else None


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One worker at a time (an exclusive lock on the file `path`)."""
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _machine_lock(config) -> MachineLock | None:
    global _lock
    folder = run_folder(config)
    if _lock is None and folder is not None and worker_count() > 1:
        _lock = MachineLock(folder)
    return _lock


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    lock = _machine_lock(item.config)
    if lock is None:
        yield
        return
    alone = _alone(item)
    groups = sorted({m.args[0] for m in item.iter_markers("xdist_group")})
    with contextlib.ExitStack() as held:
        held.enter_context(lock.held(alone))
        for group in groups:  # one test of a group at a time, as --dist loadgroup would run them
            held.enter_context(exclusive(run_folder(item.config) / f"group-{group}.lock"))
        held.enter_context(_threads(cpu_cores() if alone else None))
        yield


@contextlib.contextmanager
def _threads(every_core: int | None) -> Iterator[None]:
    """During an `alone` test every core's threads (the machine is its own). After any test the
    worker's share again: some code sets torch's count for its own run and keeps it (the demo
    world's ControlNet script, for one)."""
    import cv2
    import torch

    before, threads = {v: os.environ.get(v) for v in THREADS}, torch.get_num_threads()
    cv_threads = cv2.getNumThreads()
    if every_core:
        set_threads(every_core)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
