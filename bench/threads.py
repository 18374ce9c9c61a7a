"""Training processes side by side on a CPU: torch's default threads against the cores split.

    python bench/threads.py                    # 2 at once, the demo world's SD at 128 px
    python bench/threads.py --jobs 2 --steps 80 --rounds 3

What `kshd sweep -j N` (and the test suite's xdist workers) meet on a machine without CUDA. Each
process trains the demo's LoRA steps on the world's base (models/world/sd, the demo's settings)
and times its steady steps, after every process has loaded (a barrier), so that the steps
overlap. Three cases, alternating rounds: one process alone with the default threads; N at once
with the default (a thread per core each); N at once with cores // N threads each, as
`kshd sweep -j N` sets them (kshd.experiments.sweep.queue_env). Prints each case's seconds per
step and the ratios, measured in one run (absolute seconds on a shared machine mean little).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kshd.experiments.sweep import THREAD_VARS, cpu_cores, queue_env

ROOT = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 2
CASES = ("alone, default threads", "together, default threads", "together, cores split")


def worker(args: argparse.Namespace) -> None:
    """One training run in this process, its steps timed after the barrier; prints JSON."""
    import torch
    from datasets import load_from_disk

    from kshd.config.compose import defaults
    from kshd.training.components import load_components
    from kshd.training.loop import train_lora

    split = load_from_disk(args.dataset)["train"]
    c = load_components(args.model)
    s = defaults("train", resolution=args.resolution, batch_size=1,
                 max_train_steps=args.steps, learning_rate=1e-4, seed=1)  # fmt: skip
    ready = Path(args.barrier) / f"ready-{os.getpid()}"
    ready.touch()
    while len(list(Path(args.barrier).glob("ready-*"))) < args.together:
        time.sleep(0.05)  # every process loaded: the steps overlap
    ends: list[float] = []
    train_lora(c, split, s, on_log=lambda row: ends.append(time.perf_counter()), give_back=False)
    steady = (ends[-1] - ends[WARMUP_STEPS]) / (len(ends) - 1 - WARMUP_STEPS)
    print(json.dumps({"s_per_step": steady, "threads": torch.get_num_threads()}))


def dataset(work: Path, n: int, size: int) -> Path:
    from kshd.data.dataset import save_dataset
    from kshd_world.samples import noise_drawings

    save_dataset(noise_drawings(work, n, size), work / "dataset", 0.0, "drawn by KSH drawing style")
    return work / "dataset"


def run_case(case: str, data: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """The processes of one case, started together; each one's figures."""
    together = 1 if case == CASES[0] else args.jobs
    base = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env = queue_env(args.jobs, base, cpu_cores(), cuda=False) if case == CASES[2] else base
    barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=work))
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--dataset", str(data),
           "--resolution", str(args.resolution), "--steps", str(args.steps),
           "--barrier", str(barrier), "--together", str(together)]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    procs = [subprocess.Popen(cmd, **pipes) for _ in range(together)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise SystemExit(f"{case}: a worker failed:\n{err[-3000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="processes at once")
    p.add_argument("--model", default=str(ROOT / "models/world/sd"))
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--dataset"), p.add_argument("--barrier")
    p.add_argument("--together", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        return worker(args)
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    data = dataset(work / "data", args.images, args.resolution)
    seen: dict[str, list[dict]] = {case: [] for case in CASES}
    for _ in range(args.rounds):  # alternating, so that a change of load hits every case
        for case in CASES:
            seen[case] += run_case(case, data, work, args)
    report(seen, args)


def report(seen: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.jobs} at once on {cpu_cores()} CPU cores: LoRA steps on {args.model} at "
        f"{args.resolution} px, batch 1, {args.steps} steps (steady after {WARMUP_STEPS}), "
        f"{args.rounds} rounds"
    )
    step = {}
    for case, runs in seen.items():
        step[case] = statistics.median(r["s_per_step"] for r in runs)
        threads = sorted({r["threads"] for r in runs})
        print(f"  {case:28s} {step[case]:6.3f} s a step  (threads {threads}, {len(runs)} runs)")
    alone, default, split = (step[c] for c in CASES)
    print(f"  together, default / split: {default / split:.2f}x the time a step")
    gain = {name: args.jobs * alone / t for name, t in (("default", default), ("split", split))}
    print(f"  throughput of {args.jobs} at once against one after the other: default "
          f"{gain['default']:.2f}x, split {gain['split']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
