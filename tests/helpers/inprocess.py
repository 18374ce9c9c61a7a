"""Stages and `kshd` commands run in the test's own process, where the process is not what a
test is about: the same entry points as `python -m ...`, without the seconds of imports a new
interpreter spends. Signals, kills, DDP, DVC end to end and peak memory keep their processes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import runpy
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kshd.cli import main as kshd_main


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """`path` as the working directory (as a stage's `cwd=`), the previous one restored."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def hand_run_env() -> Iterator[None]:
    """The environment without DVC's variables, as tests/stage_project.py's stage_env() gives a
    stage's process: a stage run by hand, not inside `dvc repro`."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DVC_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps one mixed-precision setting per process (AcceleratorState); a training
    run here picks its own as a new process would, and leaves none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    try:
        yield
    finally:
        AcceleratorState._reset_state()


def run_stage_here(root: Path, stage: str, *overrides: str) -> None:
    """`python -m kshd.stages.<stage> overrides` in `root`, in this process: the stage's
    `main(argv)` reads `root/params.yaml` as the process would."""
    module = importlib.import_module(f"kshd.stages.{stage}")
    with working_dir(root), hand_run_env(), fresh_accelerate_state():
        module.main(list(overrides))


@dataclass
class Ran:
    """What a command run here did, named as a CompletedProcess's: its exit code and what it
    said (stderr, and its log as its own logging.basicConfig would have printed it there)."""

    returncode: int
    stderr: str


# The formats of the entry points' logging.basicConfig: kshd.cli's and kshd.stages'.
CLI_FORMAT = "%(message)s"
STAGE_FORMAT = "%(asctime)s %(name)s: %(message)s"


class _Lines(logging.Handler):
    """Every record of the run as the command's own logging.basicConfig would print it, with
    any traceback a record carries."""

    def __init__(self, fmt: str) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(fmt))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _said(capsys, fmt: str) -> Iterator[list[str]]:
    """stderr (progress bars, prints) and every log record at INFO and above, in one text."""
    capsys.readouterr()  # what the test printed before is not the command's
    handler, root = _Lines(fmt), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    out: list[str] = []
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        out.append(capsys.readouterr().err)
        out.extend(handler.lines)


def _exit_code(err: SystemExit) -> int:
    if err.code is None:
        return 0
    return err.code if isinstance(err.code, int) else 1


def kshd_here(argv: Sequence[str], capsys, cwd: Path | None = None) -> Ran:
    """`kshd argv` in this process (kshd.cli.main, which ends in sys.exit)."""
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(working_dir(cwd))
        said = stack.enter_context(_said(capsys, CLI_FORMAT))
        try:
            kshd_main(list(argv))
            code = 0
        except SystemExit as err:
            code = _exit_code(err)
    return Ran(code, "\n".join(said))


def stage_main_here(stage: str, argv: Sequence[str], capsys, cwd: Path) -> Ran:
    """`python -m kshd.stages.<stage> argv` in `cwd`, in this process: the module run as
    `__main__`, so its `if __name__ == "__main__":` lines (kshd.stages.entry: one line and exit
    code 2 for a user's error) run too."""
    module = f"kshd.stages.{stage}"
    with working_dir(cwd), hand_run_env(), _said(capsys, STAGE_FORMAT) as said:
        saved_argv = sys.argv
        sys.argv = [module, *argv]
        try:
            with warnings.catch_warnings():
                # runpy's note that the module was imported before: it is, by this suite
                warnings.simplefilter("ignore", RuntimeWarning)
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as err:
            code = _exit_code(err)
        finally:
            sys.argv = saved_argv
    return Ran(code, "\n".join(said))
