"""Run a module as `__main__` and signal the process itself at an exact point of its work.

    python tests/helpers/tripwire.py SIGNAL WHEN MODULE [ARGS...]

A kill from outside lands wherever the child happens to be when the parent looks: a race that a
faster or slower machine loses. Here the child stops itself at the event, so "killed after
checkpoint-6" means exactly that on any machine. WHEN is one of

    progress:DESC:N        a tqdm bar named DESC reached N (after that step's update)
    log:REGEX              a `kshd` log message matched REGEX (after it was printed)
    audit:EVENT:GLOB[:N]   the N-th (default 1st) Python audit EVENT ("open", "os.rename",
                           "os.mkdir") with a path argument (made absolute) matching GLOB;
                           before it happens

It prints `tripwire: WHEN` to stderr right before the signal, so the parent can tell a stop at
the point from a crash. Only the first hit fires (a second SIGINT would mean "stop now").
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import runpy
import signal
import sys
import threading

FIRED = "tripwire:"


class Wire:
    """Fires the signal once, from whichever hook sees the point first."""

    def __init__(self, sig: signal.Signals, when: str) -> None:
        self.sig, self.when, self.lock, self.fired = sig, when, threading.Lock(), False

    def fire(self) -> None:
        with self.lock:
            if self.fired:
                return
            self.fired = True
        sys.stderr.write(f"\n{FIRED} {self.when}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), self.sig)


def on_progress(wire: Wire, desc: str, n: int) -> None:
    from tqdm import std

    update = std.tqdm.update

    def counted(bar, k=1):
        out = update(bar, k)
        if bar.desc == desc and bar.n >= n:
            wire.fire()
        return out

    std.tqdm.update = counted


def on_log(wire: Wire, pattern: str) -> None:
    regex = re.compile(pattern)
    call = logging.Logger.callHandlers

    def then_trip(logger: logging.Logger, record: logging.LogRecord) -> None:
        call(logger, record)  # printed first: the parent sees the line that stopped the run
        if logger.name.startswith("kshd") and regex.search(record.getMessage()):
            wire.fire()

    logging.Logger.callHandlers = then_trip


def on_audit(wire: Wire, event: str, glob: str, n: int) -> None:
    seen = [0]

    def hook(name: str, args: tuple) -> None:
        if name != event or not args or wire.fired:
            return
        paths = [
            os.path.abspath(os.fsdecode(a))
            for a in args
            if isinstance(a, (str, bytes, os.PathLike))
        ]
        if any(fnmatch.fnmatch(path, glob) for path in paths):
            seen[0] += 1
            if seen[0] >= n:
                wire.fire()

    sys.addaudithook(hook)


def arm(sig_name: str, when: str) -> None:
    wire = Wire(signal.Signals[sig_name], when)
    kind, _, rest = when.partition(":")
    if kind == "progress":
        desc, n = rest.rsplit(":", 1)
        on_progress(wire, desc, int(n))
    elif kind == "log":
        on_log(wire, rest)
    elif kind == "audit":
        event, glob, *count = rest.split(":")
        on_audit(wire, event, glob, int(count[0]) if count else 1)
    else:
        raise SystemExit(f"tripwire: unknown WHEN {when!r}: use progress:, log: or audit:")


def main() -> None:
    sig_name, when, module, *args = sys.argv[1:]
    sys.path[0] = os.getcwd()  # as `python -m MODULE` has it, not this helper's folder
    arm(sig_name, when)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
