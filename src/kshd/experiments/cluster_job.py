"""One experiment of a cluster sweep, as a submitit job: its own clone at the sweep's commit,
`dvc exp run` for its parameters there, `dvc exp push` to the git and DVC remotes.

Pre-empted or out of time, submitit calls `checkpoint`: the run in flight gets Ctrl-C (the
training finishes its step, writes a checkpoint and stops), and the same job is resubmitted. The
resubmitted job finds its clone, runs the same `dvc exp run`, and the training continues from
that checkpoint (the clone's `models/checkpoints/` persists) to the same LoRA bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from kshd.experiments.dvc import DvcError, dvc_executable, run_dvc, run_git

log = logging.getLogger(__name__)

# Ctrl-C lets the training finish its step and write a checkpoint; SLURM's warning comes 90 s
# before the end (submitit's signal_delay_s), so the stop must come well within it.
STOP_GRACE_S = 60.0
LOG_NAME = "kshd-job.log"  # the run's own output, in the clone


@dataclass(frozen=True)
class Remotes:
    """Where a job clones from and pushes to: a git URL and a DVC remote (name and URL)."""

    git_url: str
    dvc_name: str
    dvc_url: str


@dataclass
class ExperimentJob(submitit.helpers.Checkpointable):
    """Run one experiment (`name`, its Hydra `overrides`) of the sweep's `commit` in `clone`."""

    name: str
    overrides: list[str]
    commit: str
    ref: str  # the remote ref that holds `commit` (pushed by the sweep)
    remotes: Remotes
    clone: str
    links: dict[str, str] = field(default_factory=dict)  # relative path -> workspace's folder
    env: dict[str, str] = field(default_factory=dict)  # e.g. the CPU threads of each job
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def __call__(self) -> dict:
        root = Path(self.clone)
        prepare_clone(root, self.remotes, self.ref, self.commit)
        link_missing(root, self.links)
        try:
            code = self._run(root)
        except BaseException:  # cancelled (Ctrl-C, scancel): never leave the run behind
            self.stop()
            raise
        if code:
            raise DvcError(f"experiment {self.name}: `dvc exp run` exited {code}; {tail(root)}")
        push(root, self.name, self.remotes.dvc_name)
        metrics = root / "reports" / "metrics.json"  # the evaluation's (output.reports_dir)
        found = json.loads(metrics.read_text()) if metrics.is_file() else {}
        return {"name": self.name, "clone": self.clone, "metrics": found}

    def _run(self, root: Path) -> int:
        cmd = [dvc_executable(), "exp", "run", "--pull", "-n", self.name]
        for override in self.overrides:
            cmd += ["-S", override]
        log.info("experiment %s in %s: %s", self.name, root, " ".join(cmd[1:]))
        with (root / LOG_NAME).open("a", encoding="utf-8") as out:
            # a session of its own: submitit's signals reach this process only, which stops the
            # run in order (checkpoint) instead of the signal killing it half way
            self._proc = subprocess.Popen(
                cmd, cwd=root, env=os.environ | self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            return self._proc.wait()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Pre-empted or timed out: stop the run after a checkpoint, then resubmit this job."""
        log.warning("experiment %s: stopping for a resubmission", self.name)
        self.stop()
        return super().checkpoint(*args, **kwargs)  # this job again (pickled without _proc)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ctrl-C to the run's process group (DVC and the stage); SIGKILL after `grace_s`.

        Called from submitit's signal handler while `_run` waits on the process (Popen's lock
        held), so the child is reaped here with os.waitpid."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)

    def __getstate__(self) -> dict:
        """Pickled for the cluster without the process of a run in flight."""
        return {k: v for k, v in self.__dict__.items() if k != "_proc"} | {"_proc": None}


def prepare_clone(root: Path, remotes: Remotes, ref: str, commit: str) -> None:
    """A clone of the git remote at `commit`, with the sweep's DVC remote; a resubmitted job
    finds it as its first run left it (checkpoints included) and changes nothing."""
    if not (root / ".git").is_dir():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a clone cut short by a kill
        partial.parent.mkdir(parents=True, exist_ok=True)
        run_git(partial.parent, "clone", "-q", "--no-checkout", remotes.git_url, partial.name)
        run_git(partial, "fetch", "-q", "origin", f"{ref}:{ref}")
        run_git(partial, "checkout", "-q", "--detach", commit)
        # the workspace's remote, whether its config is committed or local to the workspace
        run_dvc(partial, ["remote", "add", "--local", "--force", remotes.dvc_name, remotes.dvc_url])
        partial.rename(root)
    elif run_git(root, "rev-parse", "HEAD") != commit:
        raise DvcError(f"{root} is not at the sweep's commit {commit[:7]}: remove it and rerun")


def link_missing(root: Path, links: dict[str, str]) -> None:
    """The workspace's git-ignored folders the run needs (built models, say), linked into the
    clone where it lacks them: a cluster's nodes share the workspace's filesystem."""
    for rel, target in links.items():
        link = root / rel
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=Path(target).is_dir())


def push(root: Path, name: str, dvc_remote: str) -> None:
    """The finished experiment to the git remote (`origin` of the clone) and its outputs to the
    DVC remote, for `kshd sweep --collect`."""
    run_dvc(root, ["exp", "push", "--force", "-r", dvc_remote, "origin", name])
    log.info("experiment %s pushed", name)


def tail(root: Path, chars: int = 2000) -> str:
    """The end of the run's output, for the job's error."""
    path = root / LOG_NAME
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return f"the end of {path}:\n{text[-chars:]}"
