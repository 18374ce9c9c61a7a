"""Running the `dvc` command of this environment from Python (demo, sweep, compare)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kshd.config import UserError

log = logging.getLogger(__name__)


class DvcError(UserError, RuntimeError):
    """A `dvc` command failed or hung; the message names the command and what DVC said."""


def dvc_executable() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(root: Path, args: Sequence[str], timeout: float | None = None, tries: int = 1) -> str:
    """Run `dvc args` in `root`; with `timeout`, a read that hangs is tried again, `tries` times.

    pygit2 1.21's BlobIO can deadlock (libgit2/pygit2#1488) while `dvc exp show` reads
    experiments' metrics from git: a read-only query must not hang a sweep forever.
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
        if proc.returncode:
            raise DvcError(f"`dvc {' '.join(args)}` in {root} failed: {proc.stderr.strip()}")
        return proc.stdout
    raise DvcError(f"`dvc {' '.join(args)}` in {root} hung {tries} times; try it by hand")


def exp_show(root: Path) -> list:
    """`dvc exp show --json` (seconds normally; retried if it hangs)."""
    return json.loads(run_dvc(root, ["exp", "show", "--json"], timeout=300, tries=3))
