"""`kshd sweep --collect`: the experiments a cluster sweep's jobs pushed, pulled into the
workspace (`dvc exp pull`) and compared on one page."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kshd.experiments.compare import build_comparison
from kshd.experiments.dvc import DvcError, run_dvc, run_git

log = logging.getLogger(__name__)

RECORD = "sweep.json"  # written by kshd.experiments.cluster.submit


def find_record(root: Path, sweeps_dir: str, group: str | None) -> Path:
    """The named sweep's record, else the newest one under `cluster.dir`."""
    base = root / sweeps_dir
    if group:
        record = base / group / RECORD
        if not record.is_file():
            raise DvcError(f"kshd sweep --collect: no sweep {group!r} in {base} (no {record})")
        return record
    records = sorted(base.glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise DvcError(
            f"kshd sweep --collect: no cluster sweep in {base}; submit one with "
            "`kshd sweep --executor slurm -S ...` (or set cluster.dir)."
        )
    return records[-1]


def pushed(root: Path, git_url: str, names: list[str]) -> list[str]:
    """Which of `names` the git remote holds as experiments (whatever their baseline)."""
    out = run_dvc(root, ["exp", "list", "--all-commits", "--names-only", git_url], timeout=300)
    found = {line.strip() for line in out.splitlines()}
    return [n for n in names if n in found]


def collect(root: Path, record_path: Path) -> int:
    """Pull the sweep's pushed experiments (their outputs from the DVC remote) and write
    reports/compare/; 1 when some are not pushed yet (running, queued or failed)."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    head = run_git(root, "rev-parse", "HEAD")
    if head != record["commit"]:
        raise DvcError(
            f"kshd sweep --collect: sweep {record['group']} ran commit {record['commit'][:7]}, "
            f"the workspace is at {head[:7]}; `git checkout "
            f"{record['commit'][:7]}` and collect again (the comparison reads that commit's "
            "experiments)."
        )
    names = [e["name"] for e in record["experiments"]]
    remotes = record["remotes"]
    ready = pushed(root, remotes["git_url"], names)
    if ready:
        run_dvc(root, ["exp", "pull", "--force", "-r", remotes["dvc_name"],
                       remotes["git_url"], *ready])  # fmt: skip
        build_comparison(root, root / "reports" / "compare", ready)
    missing = [e for e in record["experiments"] if e["name"] not in ready]
    if missing:
        folder = record_path.parent / "submitit"
        states = "; ".join(f"{e['name']}: {job_state(folder, e['job_id'])}" for e in missing)
        log.warning(
            "sweep %s: %d of %d experiments not pushed yet: %s",
            record["group"], len(missing), len(names), states,
        )  # fmt: skip
    log.info("sweep %s: %d experiments collected", record["group"], len(ready))
    return 1 if missing else 0


def job_state(folder: Path, job_id: str) -> str:
    """What submitit's own files say of a job that pushed nothing: failed (the error's last
    line) or not ended (queued, running, or killed without a word), and where its log is."""
    from submitit.core.utils import JobPaths, pickle_load

    paths = JobPaths(folder / "%j", job_id, task_id=0)
    if not paths.result_pickle.exists():
        return f"not ended (log {paths.stdout})"
    outcome, value = pickle_load(paths.result_pickle)
    if outcome == "error":
        last = (str(value).strip().splitlines() or ["?"])[-1]
        return f"failed: {last} (log {paths.stderr})"
    return f"ended without pushing (log {paths.stdout})"
