"""`kshd sweep --executor slurm|local`: one submitit job per experiment of the grid.

submitit (the library behind Hydra's SLURM launcher) submits, requeues and reports; DVC expands
the grid (as `dvc exp run --queue -S` does), runs each experiment in the job's own clone and
carries it back (`dvc exp push`, then `kshd sweep --collect`). Nothing here schedules.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from kshd.config.compose import value_at
from kshd.config.schema import ClusterSettings, ProjectConfig
from kshd.experiments.cluster_job import ExperimentJob, Remotes, tail
from kshd.experiments.collect import RECORD, collect
from kshd.experiments.dvc import DvcError, run_git
from kshd.experiments.sweep import THREAD_VARS, cpu_cores, cuda_available, queue_env
from kshd.stages import MODEL_KEYS

log = logging.getLogger(__name__)

# Folders an experiment may need that git does not carry (built models, say), linked from the
# workspace into each clone where they are git-ignored there.
LINKED_KEYS = (
    *MODEL_KEYS,
    "data.raw_dir",
    "data.reg_dir",
    "tiny.dir",
    "caption.model",
    "tagger.model",
)


@dataclass(frozen=True)
class Planned:
    """One experiment of the grid: its DVC name, overrides, and the clone it runs in."""

    name: str
    overrides: list[str]
    clone: str


def experiment_grid(overrides: Sequence[str]) -> list[list[str]]:
    """The grid of `-S` overrides exactly as `dvc exp run --queue -S` expands it (DVC's own
    function: comma lists and ranges sweep, escaped values stay whole)."""
    from dvc.utils.hydra import get_hydra_sweeps

    return [s["params.yaml"] for s in get_hydra_sweeps({"params.yaml": list(overrides)})]


def sweep_commit(root: Path) -> str:
    """The commit the jobs run; uncommitted work would be missing from their clones: refused."""
    changed = run_git(root, "status", "--porcelain").splitlines()
    if changed:
        shown = ", ".join(line[3:] for line in changed[:3])
        raise DvcError(
            f"kshd sweep --executor: {len(changed)} uncommitted change(s) ({shown}"
            f"{', ...' if len(changed) > 3 else ''}): the jobs run the committed project in "
            "their own clones; commit them (drawings: `dvc add` and `dvc push` them) and rerun."
        )
    return run_git(root, "rev-parse", "HEAD")


def resolve_remotes(root: Path, c: ClusterSettings) -> Remotes:
    """The git URL and the DVC remote the jobs use, read from the workspace; one line naming
    the key and the way out where one is missing."""
    try:
        url = run_git(root, "remote", "get-url", c.git_remote)
    except DvcError:
        raise DvcError(
            f"config key `cluster.git_remote` = {c.git_remote!r}: the workspace has no such git "
            f"remote; `git remote add {c.git_remote} <url>` (a repository every node reaches)."
        ) from None
    if "://" not in url and ":" not in url.split("/")[0] and (root / url).exists():
        url = str((root / url).resolve())  # a relative path, as the clones will not be here
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = c.dvc_remote or repo.config["core"].get("remote")
        remotes = repo.config["remote"]
        if not name or name not in remotes:
            raise DvcError(
                f"config key `cluster.dvc_remote` = {name!r}: the workspace has no such DVC "
                "remote; `dvc remote add -d storage <url>` (a folder every node reaches, "
                "s3://..., ssh://...) so the jobs can push their outputs."
            )
        dvc_url = str(remotes[name]["url"])
    if "://" not in dvc_url and not Path(dvc_url).is_absolute():
        dvc_url = str((root / dvc_url).resolve())
    return Remotes(url, name, dvc_url)


def workspace_links(root: Path, cfg: ProjectConfig) -> dict[str, str]:
    """LINKED_KEYS' relative folders that exist here but git ignores: the clones lack them."""
    links: dict[str, str] = {}
    for key in LINKED_KEYS:
        try:
            value = value_at(cfg, key)
        except (AttributeError, KeyError):  # a key of another kind (caption=none)
            continue
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        if any(value == p or value.startswith(f"{p}/") for p in links):
            continue
        found = root / value
        ignored = git_ignored(root, value)
        if found.exists() and ignored:
            links[value] = str(found.resolve())
    return links


def git_ignored(root: Path, rel: str) -> bool:
    return not subprocess.run(["git", "check-ignore", "-q", rel], cwd=root).returncode


def make_executor(kind: str, folder: Path, c: ClusterSettings, jobs: int, name: str):
    """submitit's AutoExecutor for `kind` with the resources of conf/cluster/."""
    import submitit

    if kind == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise DvcError(
            "kshd sweep --executor slurm: `sbatch` / `srun` are not on PATH; run it on the "
            "cluster's "
            "login node (`--executor local` runs the same jobs on this machine)."
        )
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=kind)
    gpus = c.gpus_per_job if kind == "slurm" or cuda_available() else 0
    if kind == "local" and gpus:
        log.warning(
            "--executor local: every job sees the same %d GPU(s) (submitit's local executor "
            "pins none); `kshd sweep --gpus` runs one experiment per GPU", gpus,
        )  # fmt: skip
    executor.update_parameters(
        name=name,
        timeout_min=c.timeout_min,
        gpus_per_node=gpus,
        tasks_per_node=1,
        nodes=1,
        cpus_per_task=c.cpus_per_task,
        mem_gb=c.mem_gb,
        slurm_partition=c.partition,
        slurm_additional_parameters=dict(c.sbatch),
        slurm_setup=list(c.setup),
        slurm_array_parallelism=c.max_running or jobs,
    )
    return executor


def job_env(kind: str, jobs: int) -> dict[str, str]:
    """The local executor starts every job at once on this machine: split its CPU cores between
    them as `kshd sweep -j` does (a SLURM job has its node's cores to itself)."""
    if kind != "local":
        return {}
    env = queue_env(jobs, {k: v for k, v in os.environ.items() if k in THREAD_VARS},
                    cpu_cores(), cuda_available())  # fmt: skip
    return {k: env[k] for k in THREAD_VARS if k in env}


def plan(sweep_dir: Path, group: str, grid: list[list[str]]) -> list[Planned]:
    """Names as DVC gives a named sweep (`<name>-<n>`) and a clone for each."""
    return [
        Planned(
            f"{group}-{i}", [*overrides, f"tracking.group={group}"], str(sweep_dir / f"{group}-{i}")
        )  # fmt: skip
        for i, overrides in enumerate(grid, start=1)
    ]


def submit(
    root: Path, kind: str, cfg: ProjectConfig, overrides: Sequence[str], group: str
) -> tuple[Path, list]:
    """Submit one job per experiment; the record `--collect` reads, and the submitit jobs."""
    c = cfg.cluster
    commit = sweep_commit(root)
    remotes = resolve_remotes(root, c)
    ref = f"refs/kshd/sweeps/{group}"
    run_git(root, "push", "-q", c.git_remote, f"{commit}:{ref}")  # the commit, for the clones
    sweep_dir = (root / c.dir / group).resolve()
    if (sweep_dir / RECORD).exists():
        raise DvcError(
            f"kshd sweep --group {group}: {sweep_dir} holds that sweep already; choose another "
            f"--group (or `kshd sweep --collect --group {group}` to gather it)."
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(sweep_dir, group, experiment_grid(overrides))
    links, env = workspace_links(root, cfg), job_env(kind, len(planned))
    executor = make_executor(kind, sweep_dir / "submitit", c, len(planned), group)
    work = [ExperimentJob(p.name, p.overrides, commit, ref, remotes, p.clone, links, env)
            for p in planned]  # fmt: skip
    with executor.batch():
        jobs = [executor.submit(w) for w in work]
    record = sweep_dir / RECORD
    record.write_text(
        json.dumps(
            {"group": group, "executor": kind, "commit": commit, "ref": ref,
             "remotes": asdict(remotes),
             "experiments": [asdict(p) | {"job_id": j.job_id} for p, j in zip(planned, jobs,
                                                                               strict=True)]},
            indent=2,
        ),
        encoding="utf-8",
    )  # fmt: skip
    log.info("submitted %d %s jobs (%s); record %s", len(jobs), kind, group, record)
    return record, jobs


def wait_jobs(jobs: Sequence, record: Path) -> list[str]:
    """Block until every job ended; the names of those that failed, each logged with where its
    output is."""
    planned = json.loads(record.read_text(encoding="utf-8"))["experiments"]
    failed = []
    for job, p in zip(jobs, planned, strict=True):
        try:
            job.result()
            log.info("experiment %s: done (job %s)", p["name"], job.job_id)
        except Exception as err:  # submitit's FailedJobError / UncompletedJobError
            failed.append(p["name"])
            log.error(
                "experiment %s failed (job %s): %s; submitit's log: %s; %s",
                p["name"], job.job_id, str(err).strip().splitlines()[-1:], job.paths.stderr,
                tail(Path(p["clone"]), 500),
            )  # fmt: skip
    return failed


def run_cluster_sweep(
    root: Path,
    kind: str,
    overrides: Sequence[str],
    cfg: ProjectConfig,
    group: str | None = None,
    prepare: Callable[[Path, Sequence[str]], None] | None = None,
    wait: bool = True,
) -> int:
    """Submit the grid as `kind` jobs; unless `wait` is off, wait for them and collect. 1 if any
    failed (the others are collected all the same)."""
    group = group or datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    if prepare is not None:
        prepare(root, overrides)
    record, jobs = submit(root, kind, cfg, overrides, group)
    if not wait:
        log.info("collect them when they are done: kshd sweep --collect --group %s", group)
        return 0
    log.info("waiting for %d jobs; their logs: %s", len(jobs), record.parent / "submitit")
    failed = wait_jobs(jobs, record)
    code = collect(root, record)
    return 1 if failed else code
