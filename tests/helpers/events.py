"""Waiting on what a child process does, never on the clock.

`Child` reads a process's merged stdout and stderr line by line (tqdm's carriage returns end a
line too) in a thread, and `wait_for` blocks until a line matches: the child printing is the
event. `stop_at` runs a stage that stops itself at an exact point (tests/helpers/tripwire.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .tripwire import FIRED

TRIPWIRE = Path(__file__).with_name("tripwire.py")
LINE_END = re.compile(rb"[\r\n]")


class Child:
    """A process whose output is collected line by line; `wait_for` blocks on new lines."""

    def __init__(self, cmd: Sequence[str], cwd: Path, env: dict | None = None, **popen) -> None:
        self.cmd = list(cmd)
        self.proc = subprocess.Popen(
            self.cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen
        )
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        for chunk in iter(lambda: self.proc.stdout.read1(1 << 16), b""):
            *done, pending = LINE_END.split(pending + chunk)
            with self._changed:
                self.lines += [line.decode(errors="replace") for line in done if line]
                self._changed.notify_all()
        with self._changed:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            self.ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        """The first output line matching `pattern`; fails naming it if the child ends first."""
        regex, seen = re.compile(pattern), 0
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if self.ended:
                    raise AssertionError(self._why(f"ended (exit {self.proc.wait()})", pattern))
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    raise AssertionError(self._why(f"ran {timeout:.0f} s", pattern))

    def _why(self, what: str, pattern: str) -> str:
        tail = "\n".join(self.lines[-40:])
        return f"{' '.join(self.cmd[-3:])} {what} without printing /{pattern}/:\n{tail}"

    def finish(self, timeout: float = 600) -> int:
        """Wait for the process and for its last output line; its exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=60)
        return code


def tripwire_cmd(signal_name: str, when: str, module: str, *args: str) -> list[str]:
    """`python -m module args` that sends itself `signal_name` at `when` (see tripwire.py)."""
    return [sys.executable, str(TRIPWIRE), signal_name, when, module, *args]


def stop_at(root: Path, stage: str, signal_name: str, when: str, env: dict) -> Child:
    """Run `kshd.stages.<stage>` in `root` until it stops itself at `when`; fails clearly if the
    stage ended without reaching that point."""
    child = Child(tripwire_cmd(signal_name, when, f"kshd.stages.{stage}"), root, env)
    code = child.finish()
    assert f"{FIRED} {when}" in child.lines, (
        f"{stage} ended (exit {code}) without reaching {when}:\n{child.text[-3000:]}"
    )
    return child
