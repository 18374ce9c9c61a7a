"""`kshd sweep`: queue a grid of experiments in DVC, run the queue, wait, and compare them.

Exactly what a person would type, `dvc exp run --queue -S ...` then `dvc queue start`, plus the
waiting and a one-page comparison at the end. Stages whose params a sweep does not touch
(prepare, caption, dataset) come from DVC's run cache after the first experiment. With the demo
profile the tiny models are built in the workspace first; the queued copies load them from there
(kshd.stages.resolve_models). On a machine with GPUs, one queue worker per GPU, each seeing only
its own (kshd.experiments.gpus); on a CPU, `-j` workers splitting the cores.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from kshd.experiments.compare import build_comparison
from kshd.experiments.dvc import DvcError, dvc_executable, run_dvc
from kshd.experiments.gpus import pick_gpus, refuse_running_workers, start_gpu_workers

log = logging.getLogger(__name__)

QUEUED = re.compile(r"Queued experiment '([^']+)'")
DONE = ("success", "failed")
# The thread counts torch reads at start (MKL's wins over OpenMP's); each stage inherits them.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def queue(root: Path, overrides: Sequence[str]) -> list[str]:
    """`dvc exp run --queue -S ...` (a comma list sweeps); the names of the queued experiments."""
    args = ["exp", "run", "--queue"]
    for o in overrides:
        args += ["-S", o]
    out = run_dvc(root, args)  # the workspace's params.yaml is left as it was (checked)
    names = QUEUED.findall(out)
    if not names:
        raise DvcError(f"`dvc {' '.join(args)}` queued nothing:\n{out}")
    log.info("queued %d experiments: %s", len(names), ", ".join(names))
    return names


def states(root: Path, names: Sequence[str], tries: int = 3) -> dict[str, str]:
    """Each named experiment's queue state (queued, running, success, failed).

    What `dvc queue status` prints, read in this process through DVC's own queue object: the
    command is a new Python process that imports DVC and pings the workers each time (about a
    second of a core per poll, taken from the experiments that run beside it). It reads no
    experiment data (polling `dvc exp show` would read every experiment's metrics from git).
    A read may meet a file the queue's worker is writing (a JSON error): tried again.
    """
    from dvc.repo import Repo

    for attempt in range(1, tries + 1):
        try:
            with Repo(str(root)) as repo:
                entries = repo.experiments.celery_queue.status()
            break
        except ValueError as exc:  # json.JSONDecodeError: a result file half written
            if attempt == tries:
                raise DvcError(f"reading the DVC queue in {root} failed: {exc}") from exc
            log.warning("reading the DVC queue: %s (try %d of %d)", exc, attempt, tries)
            time.sleep(0.5)
    found = {e.get("name"): str(e["status"]).lower() for e in entries}
    return {n: found[n] for n in names if n in found}


def wait(root: Path, names: Sequence[str], poll: float = 5.0) -> dict[str, str]:
    """Block until every experiment finished or failed, logging progress as it changes."""
    last = None
    while True:
        now = states(root, names)
        done = sum(now.get(n) in DONE for n in names)
        if (done, now) != last:
            log.info("sweep: %d/%d finished (%s)", done, len(names), now)
            last = (done, now)
        if done == len(names):
            return now
        time.sleep(poll)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, as `taskset` or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def queue_env(jobs: int, environ: Mapping[str, str], cores: int, cuda: bool) -> dict[str, str]:
    """The environment for `dvc queue start -j jobs`: its workers, and every stage they run,
    inherit it (`dvc exp run --queue` records none of it). On a CPU, `jobs` experiments at once
    split the cores, `cores // jobs` threads each: torch's default of a thread per core in each
    process oversubscribes them (bench/threads.py). A thread count the user set is kept as it
    is; with CUDA the environment is left as it is too."""
    env = dict(environ)
    if jobs < 2 or cuda:
        return env
    if mine := {v: env[v] for v in THREAD_VARS if v in env}:
        log.info("sweep: %d experiments at once with the threads set: %s", jobs, mine)
        return env
    threads = str(max(1, cores // jobs))
    env |= dict.fromkeys(THREAD_VARS, threads)
    log.info("sweep: %d experiments at once on %d CPU cores, %s threads each", jobs, cores, threads)
    return env


def start_queue(root: Path, jobs: int) -> None:
    """`dvc queue start -j N`, the CPU cores split between the N (queue_env). Its workers are
    daemons that inherit stdout, so the output goes to a file: a pipe would stay open, and this
    call would block, until the queue is empty."""
    out = root / ".dvc" / "tmp" / "kshd-queue-start.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = queue_env(jobs, os.environ, cpu_cores(), jobs > 1 and cuda_available())
    with out.open("w") as f:
        cmd = [dvc_executable(), "queue", "start", "-j", str(jobs)]
        code = subprocess.run(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        raise DvcError(f"`dvc queue start` failed: {out.read_text(errors='replace')}")


def run_sweep(
    root: Path,
    overrides: Sequence[str],
    jobs: int | None = None,
    group: str | None = None,
    prepare: Callable[[Path, Sequence[str]], None] | None = None,
    gpus: Sequence[str] | None = None,
) -> int:
    """Queue, start the workers, wait, then write the comparison page; 1 if any failed.

    Workers: one per GPU of `gpus` (default: every visible GPU, or the first `jobs`), each
    seeing only its own (kshd.experiments.gpus); with no GPU, `jobs` (default 1) on the CPU.
    `prepare(root, overrides)` runs first: the stages never build models, and queued copies
    load the workspace's (`kshd sweep --demo` builds the demo's tiny ones there)."""
    gpus = pick_gpus(gpus, jobs)
    group = group or datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    if prepare is not None:
        prepare(root, overrides)
    if gpus:
        refuse_running_workers(root)  # before queueing: running workers would take the queue
    names = queue(root, [*overrides, f"tracking.group={group}"])
    if gpus:
        # the CPU cores split too: with no CUDA (fake GPUs in a test) the stages run on the CPU
        env = queue_env(len(gpus), os.environ, cpu_cores(), cuda_available())
        start_gpu_workers(root, gpus, env)
    else:
        start_queue(root, jobs or 1)
    final = wait(root, names)
    failed = [n for n in names if final.get(n) != "success"]
    for name in failed:
        log.error("experiment %s failed; its log: `%s queue logs %s`", name, dvc_executable(), name)
    ok = [n for n in names if n not in failed]
    if ok:
        build_comparison(root, root / "reports" / "compare", ok)
    log.info("wandb group %s: %d experiments, %d failed", group, len(names), len(failed))
    return 1 if failed else 0
