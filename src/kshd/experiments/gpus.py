"""`kshd sweep --gpus 0,1`: one DVC queue worker per GPU, each with a `CUDA_VISIBLE_DEVICES` of
its own, so that every experiment runs on one GPU and no GPU runs two at once.

No scheduler of ours: DVC's queue worker runs one experiment at a time and prefetches none
(dvc/repo/experiments/queue/celery.py, `LocalCeleryQueue.worker`), so the next queued experiment
goes to whichever worker, that is GPU, frees first. `dvc queue start -j N` starts its N workers
in one environment, and so all of them on the same GPUs; here each is started on its own.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import takewhile
from pathlib import Path

from kshd.config.errors import UserError
from kshd.experiments.dvc import DvcError, dvc_executable

log = logging.getLogger(__name__)

# What CUDA_VISIBLE_DEVICES takes: an index, or a GPU's or MIG instance's UUID (`nvidia-smi -L`).
GPU_ID = re.compile(r"\d+|(GPU|MIG)-[\w/-]+")
EXAMPLE = "e.g. --gpus 0,1 (indices or UUIDs, as CUDA_VISIBLE_DEVICES takes them)"

# Worker `num` spawned exactly as `dvc queue start` spawns it, in a fresh process whose whole
# environment we give. Rather than `_spawn_worker` in this process under a changed os.environ:
# DVC forks the spawning process into a daemon that lives as long as the worker, and that fork
# would hold this process's stdout open (a caller reading it through a pipe would wait for the
# workers) and get the environment only by inheritance, which multiprocessing's forkserver (the
# default on Linux from Python 3.14) does not give. Rather than `dvc exp queue-worker <node>`:
# the node name that `dvc queue start` recognises, the broker cleanup of worker 1 (`--clean`)
# and the worker's log file beside DVC's stay DVC's own, not copies of them here.
SPAWN = (
    "import sys; from dvc.repo import Repo; "
    "Repo(sys.argv[1]).experiments.celery_queue._spawn_worker(int(sys.argv[2]))"
)


def check_gpus(gpus: Sequence[str]) -> list[str]:
    """The GPU list of `--gpus`, checked: not empty, each an id CUDA takes, none twice."""
    ids = [str(g).strip() for g in gpus]
    shown = ",".join(map(str, gpus))
    if not ids or not all(GPU_ID.fullmatch(g) for g in ids):
        raise UserError(f"--gpus {shown!r}: expected a comma list of GPUs, {EXAMPLE}")
    if twice := sorted({g for g in ids if ids.count(g) > 1}):
        raise UserError(
            f"--gpus {shown}: GPU {', '.join(twice)} listed twice; each GPU runs one experiment "
            "at a time, list it once"
        )
    return ids


def parse_gpus(text: str) -> list[str]:
    """`--gpus 0,1` -> ["0", "1"] (checked)."""
    return check_gpus(text.split(","))


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's list where it is set (up to its
    first entry that is not an id, as CUDA reads it: "-1" hides all), else torch's indices;
    none without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(torch.cuda.device_count())]
    return list(takewhile(GPU_ID.fullmatch, (g.strip() for g in listed.split(","))))


def pick_gpus(
    gpus: Sequence[str] | None, jobs: int | None, visible: Callable[[], list[str]] = visible_gpus
) -> list[str]:
    """The GPUs to start a queue worker on, one each; [] for the CPU way (`-j` workers).

    `--gpus` as given (`-j`, if given too, must be their number); else every visible GPU, or
    the first `-j` of them.
    """
    if jobs is not None and jobs < 1:
        raise UserError(f"-j {jobs}: at least one experiment must run at a time")
    if gpus is not None:
        gpus = check_gpus(gpus)
        if jobs is not None and jobs != len(gpus):
            raise UserError(
                f"--gpus {','.join(gpus)} runs {len(gpus)} experiments at once, one per GPU, "
                f"but -j says {jobs}: leave out -j, or list {jobs} GPUs"
            )
        return gpus
    found = visible()
    if jobs is not None and jobs > len(found) > 0:
        raise UserError(
            f"-j {jobs} with {len(found)} GPUs ({','.join(found)}): one experiment per GPU at a "
            f"time; use -j {len(found)} or less, or choose them with --gpus"
        )
    return found[:jobs] if jobs else found


def refuse_running_workers(root: Path, wait_s: float = 30.0, poll: float = 2.0) -> None:
    """Refuse to start while DVC queue workers of this repo run: they would take the sweep's
    experiments on whatever GPUs they were started with. Idle ones (a sweep just ended: DVC's
    worker stops 10 to 20 s after the queue empties) are given `wait_s` to stop first."""
    from dvc.repo import Repo

    deadline = time.monotonic() + wait_s
    with Repo(str(root)) as repo:
        q = repo.experiments.celery_queue
        while running := q.worker_status():
            if any(running.values()) or time.monotonic() > deadline:
                raise UserError(
                    f"--gpus: DVC queue workers of this repo are already running "
                    f"({', '.join(sorted(running))}) and would take this sweep's experiments "
                    "on whatever GPUs they were started with; wait for them (`dvc queue "
                    "status`) or stop them (`dvc queue stop`), then run the sweep again"
                )
            log.info("sweep: waiting for the idle DVC queue workers %s to stop", sorted(running))
            time.sleep(poll)


def worker_env(env: Mapping[str, str], gpu: str) -> dict[str, str]:
    """`env` with the one GPU, and this environment's `dvc` first on PATH: DVC starts the worker
    and each experiment's `dvc exp exec-run` as `dvc`, found on PATH."""
    dvc = Path(dvc_executable())
    path = env.get("PATH", "")
    if dvc.is_absolute():
        path = os.pathsep.join(p for p in (str(dvc.parent), path) if p)
    return {**env, "PATH": path, "CUDA_VISIBLE_DEVICES": gpu}


def start_gpu_workers(root: Path, gpus: Sequence[str], env: Mapping[str, str]) -> None:
    """Queue worker i (DVC's numbering, from 1) on GPU gpus[i-1], in environment `env` (the
    stages it runs inherit it). Their log: .dvc/tmp/exps/celery/dvc-exp-worker-<i>.out."""
    out = root / ".dvc" / "tmp" / "kshd-queue-start.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for num, gpu in enumerate(gpus, 1):
            cmd = [sys.executable, "-c", SPAWN, str(root.resolve()), str(num)]
            run = subprocess.run(
                cmd, cwd=root, env=worker_env(env, gpu), stdout=f, stderr=subprocess.STDOUT
            )
            if run.returncode:
                f.flush()
                said = out.read_text(errors="replace").strip()
                raise DvcError(f"starting DVC queue worker {num} on GPU {gpu} failed: {said}")
            log.info("sweep: DVC queue worker %d on GPU %s (CUDA_VISIBLE_DEVICES)", num, gpu)
