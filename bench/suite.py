"""`make test`'s time against an earlier commit's suite, back to back on this machine.

    python bench/suite.py --base e0533c4            # ~35 min on 2 cores
    python bench/suite.py --base e0533c4 --all      # and today's whole suite after them
    python bench/suite.py --base e0533c4 -k schema  # a quick look at the mechanics

First the base commit's suite, in a worktree beside this checkout (so that ../shared is there as
for CI), in one process as its Makefile ran it, on this venv with its src/ first on the path.
Then this checkout's suite as `make test` runs it (the xdist workers), on the same tests: the
base's node ids, a test parametrized since by its first case (bench/suite_select.py). Ids that
match nothing today are printed. Prints the seconds and the ratio, measured in one run: the
machine's speed drifts over a day, so only a back-to-back pair means anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XDIST = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]  # the Makefile's
PASSED = re.compile(r"(\d+) passed")

log = logging.getLogger("bench.suite")


def pytest(cwd: Path, args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds of a pytest run in `cwd`, and its output's summary line; fails if a test did."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        raise SystemExit(f"pytest in {cwd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return seconds, summary


def base_ids(base: Path, env: dict[str, str], extra: list[str]) -> list[str]:
    """The base suite's node ids, written as this checkout's (its own path replaced)."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", *extra]
    out = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, check=True).stdout
    return [line.replace(str(base), str(ROOT)) for line in out.splitlines() if "::" in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--all", action="store_true", help="also today's whole suite")
    parser.add_argument("pytest_args", nargs="*", help="passed to both runs (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # stages find it
    base = ROOT.parent / f".suite-base-{args.base}"
    subprocess.run(["git", "worktree", "add", "-f", "--detach", str(base), args.base],
                   cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    try:
        base_env = env | {"PYTHONPATH": str(base / "src")}
        ids = base_ids(base, base_env, args.pytest_args)
        log.info("base %s: %d tests, running them", args.base, len(ids))
        base_s, base_line = pytest(base, args.pytest_args, base_env)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
        shutil.rmtree(base, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        listed = Path(tmp) / "ids.txt"
        listed.write_text("\n".join(ids), encoding="utf-8")
        select = env | {"KSHD_SUITE_IDS": str(listed), "PYTHONPATH": str(ROOT / "bench")}
        log.info("today: the same tests")
        same_s, same_line = pytest(ROOT, [*XDIST, "-p", "suite_select", *args.pytest_args], select)
        unmatched = Path(f"{listed}.unmatched").read_text(encoding="utf-8").splitlines()
    rows = [
        (f"{args.base}, one process", base_s, base_line),
        ("today, its tests", same_s, same_line),
    ]
    if args.all:
        log.info("today: the whole suite")
        rows.append(("today, the whole suite", *pytest(ROOT, [*XDIST, *args.pytest_args], env)))
    print(f"back to back on {os.cpu_count()} CPUs:")
    for name, seconds, line in rows:
        print(f"  {name:26s} {seconds:8.1f} s  {seconds / base_s:5.2f}x  ({line.strip('= ')})")
    if unmatched:
        print(f"  base tests with no id today ({len(unmatched)}): " + ", ".join(unmatched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
