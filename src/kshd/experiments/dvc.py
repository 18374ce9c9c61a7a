"""Running the `dvc` command of this environment from Python (demo, sweep, compare)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kshd.config.errors import UserError

log = logging.getLogger(__name__)


class DvcError(UserError, RuntimeError):
    """A `dvc` command failed or hung; the message names the command and what DVC said."""


def dvc_executable() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(root: Path, args: Sequence[str], timeout: float | None = None, tries: int = 1) -> str:
    """Run `dvc args` in `root`; a read-only query (`tries` > 1) that hangs past `timeout` or
    stops on DVC's "unexpected error" is tried again, `tries` times.

    pygit2 1.21's BlobIO can deadlock (libgit2/pygit2#1488) while `dvc exp show` reads
    experiments' metrics from git, and `dvc queue status` can read a file the queue's worker is
    writing ("unexpected error - Expecting value"): a query must not end a sweep for either.
    """
    cmd = [dvc_executable(), *args]
    for attempt in range(1, tries + 1):
        try:
            proc = subprocess.run(
                cmd, cwd=root, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            log.warning(
                "`dvc %s` hung for %ss (try %d of %d)", " ".join(args), timeout, attempt, tries
            )
            continue
        if not proc.returncode:
            return proc.stdout
        error = f"`dvc {' '.join(args)}` in {root} failed: {proc.stderr.strip()}"
        if attempt == tries or "unexpected error" not in proc.stderr:
            raise DvcError(error)
        log.warning("%s (try %d of %d)", error.splitlines()[0], attempt, tries)
    raise DvcError(f"`dvc {' '.join(args)}` in {root} failed {tries} times; try it by hand")


def run_git(root: Path, *args: str) -> str:
    """`git args` in `root`, its output without the trailing newline (a porcelain status's
    leading blank kept); DvcError with git's words if it fails."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise DvcError(f"`git {' '.join(args)}` in {root} failed: {proc.stderr.strip()}")
    return proc.stdout.rstrip()


def exp_show(root: Path) -> list:
    """`dvc exp show --json` (seconds normally; retried if it hangs)."""
    return json.loads(run_dvc(root, ["exp", "show", "--json"], timeout=300, tries=3))
