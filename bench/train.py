"""Training throughput: cached latents/text embeddings vs the reference loop, side by side.

    python bench/train.py                    # tiny model and an SD1.5-shaped one at 128 px (CPU)
    python bench/train.py --models sd15 --resolution 256 --steps 8
    python bench/train.py --compile          # cached steps: eager vs train.compile=true

The reference loop (train.cache_latents=false) runs the VAE and the text encoder and tokenizes
every item at every step. Each mode runs in its own process so peak RSS is its own. Prints
ratios measured in one run; absolute seconds on a shared machine mean little.

--compile compares cached steps eager, compiled (train.compile: the UNet channels-last) and
compiled with the UNet left NCHW, steady steps apart from the warm-up
in which torch.compile compiles: once with an empty inductor cache (a user's first run), then with
the cache the first filled (later runs of the same model and shapes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 2
COMPILED = ("compiled", "compiled-nchw")  # train.compile=true; -nchw: without channels-last


def build_sd15_shaped(out: Path) -> None:
    """SD 1.5's UNet, VAE and text-encoder shapes with random weights (no download)."""
    from kshd_world.clip_bpe import clip_bpe_tokenizer
    from kshd_world.sd15_shaped import build_sd15_shaped as build

    build(out, clip_bpe_tokenizer())  # SD 1.x's own tokenizer and special-token ids


def dataset(out: Path, n: int, size: int) -> Path:
    from kshd.data.dataset import save_dataset
    from kshd_world.samples import noise_drawings

    save_dataset(noise_drawings(out, n, size), out / "dataset", 0.0, "drawn by KSH drawing style")
    return out / "dataset"


def worker(args: argparse.Namespace) -> None:
    """One training run in this process; prints its figures as JSON."""
    from datasets import load_from_disk

    from kshd.training import compiled

    if args.mode == "compiled-nchw":  # the UNet left as loaded
        compiled.CHANNELS_LAST = False

    from kshd.config.compose import defaults
    from kshd.training.components import load_components
    from kshd.training.loop import train_lora
    from kshd.training.result import peak_rss_mb

    split = load_from_disk(args.dataset)["train"]
    c = load_components(args.model, unet=False)  # as the train stage loads them
    s = defaults(
        "train",
        resolution=args.resolution,
        batch_size=1,
        max_train_steps=args.steps,
        cache_latents=args.mode != "live",
        learning_rate=1e-4,
        seed=1,
        compile=args.mode in COMPILED,
    )
    ends: list[float] = []  # when each optimizer step ended
    warmup = min(WARMUP_STEPS, args.steps - 2)  # the first steps allocate; steady state after
    profile = cProfile.Profile()

    def on_log(row: dict) -> None:
        ends.append(time.perf_counter())
        if len(ends) == warmup + 1:
            profile.enable()

    start = time.perf_counter()
    train_lora(
        c,
        split,
        s,
        on_log=on_log,
        cache_dir=Path(args.cache) if args.mode != "live" else None,
        give_back=False,  # as the train stage: only the LoRA is saved afterwards
    )
    profile.disable()
    total = time.perf_counter() - start
    steady = ends[-1] - ends[warmup]
    figures = {"images_per_s": (len(ends) - 1 - warmup) / steady, "total_s": total}
    figures["warmup_s"] = ends[warmup] - start  # loading, caching, compiling, the first steps
    figures |= {"peak_rss_mb": peak_rss_mb(), "phases": phase_shares(profile, steady)}
    print(json.dumps(figures))


# Where a steady step's time goes: (file suffix, function) of the calls that make each phase.
PHASES = {
    "inputs": [
        ("kshd/training/components.py", "batch_inputs"),
        ("kshd/training/batches.py", "encode_live"),
        ("data/dataloader.py", "__next__"),
    ],
    "forward": [("kshd/training/loss.py", "diffusion_loss")],
    "backward": [("torch/_tensor.py", "backward")],
    "optimizer": [
        ("accelerate/optimizer.py", "step"),
        ("accelerate/optimizer.py", "zero_grad"),
        ("accelerate/accelerator.py", "clip_grad_norm_"),
        ("accelerate/scheduler.py", "step"),
    ],
    "logging": [("kshd/training/loop.py", "_record"), ("accelerate/accelerator.py", "gather")],
}


def phase_shares(profile: cProfile.Profile, steady_s: float) -> dict[str, float]:
    """Each phase's share of the steady steps' wall time (cProfile's cumulative times); the
    rest is what no phase names."""
    stats = pstats.Stats(profile).stats  # (file, line, function) -> (..., cumulative, callers)
    shares = {}
    for phase, calls in PHASES.items():
        cum = sum(
            v[3]
            for (file, _, fn), v in stats.items()
            if any(file.endswith(suffix) and fn == name for suffix, name in calls)
        )
        shares[phase] = cum / steady_s
    shares["other"] = max(0.0, 1 - sum(shares.values()))
    return shares


def run_mode(model: str, data: Path, cache: Path, mode: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--dataset",
        str(data),
        "--cache",
        str(cache),
        "--mode",
        mode,
        "--resolution",
        str(args.resolution),
        "--steps",
        str(args.steps),
    ]
    # one inductor cache per bench: its first compiled run compiles from nothing
    env = dict(os.environ, TQDM_DISABLE="1", TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "sd15"])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--model"), p.add_argument("--dataset"), p.add_argument("--cache")
    p.add_argument("--mode", choices=["live", "cold", "warm", *COMPILED])
    p.add_argument("--compile", action="store_true", help="eager vs compiled (not vs live)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        return worker(args)
    from kshd_world.tiny import build_tiny_models

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = dataset(work / "data", args.images, args.resolution)
    for name in args.models:
        if name == "tiny":
            model = str(build_tiny_models(work / "tiny")["sd"])
        else:
            build_sd15_shaped(work / "sd15")
            model = str(work / "sd15")
        cache = work / f"cache-{name}"
        modes = ("warm", *COMPILED) if args.compile else ("live", "warm")
        r = {"cold": [run_mode(model, data, cache, "cold", args)]} | {m: [] for m in modes}
        for _ in range(args.rounds):  # alternating, so a load change hits every mode alike
            for mode in modes:
                r[mode].append(run_mode(model, data, cache, mode, args))
        (report_compiled if args.compile else report)(name, r, args)


def report(name: str, r: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(
        f"\n{name} at {args.resolution} px, batch 1, {args.steps} steps "
        f"(steady state after {WARMUP_STEPS}), {args.images} images, {args.rounds} rounds"
    )
    for mode, label in [
        ("live", "reference loop (VAE + text encoder each step)"),
        ("cold", "cached, first run (cache filled in this run)"),
        ("warm", "cached, rerun (cache reused)"),
    ]:
        for m in r[mode]:
            print(
                f"  {label:48s} {m['images_per_s']:7.3f} img/s  run {m['total_s']:6.1f} s  "
                f"peak RSS {m['peak_rss_mb']:7.0f} MB"
            )
    _phases(r, {"live": "live", "warm": "warm"})
    _ratios("training speed-up with the cache", r["warm"], r["live"], "images_per_s")
    _ratios("peak RSS cached/live", r["warm"], r["live"], "peak_rss_mb")


def _ratios(label: str, runs: list[dict], bases: list[dict], key: str) -> None:
    """`key` of each round's run over its base run's, in round order, and their median."""
    ratios = [m[key] / b[key] for m, b in zip(runs, bases, strict=True)]
    median = sorted(ratios)[len(ratios) // 2]
    print(f"  {label}, per round: {', '.join(f'{x:.2f}x' for x in ratios)} (median {median:.2f}x)")


def _phases(r: dict[str, list[dict]], labels: dict[str, str]) -> None:
    """Where a steady step of each mode's last round went (the bench's profile)."""
    for mode, label in labels.items():
        phases = r[mode][-1]["phases"]
        print(f"  {label} step: " + ", ".join(f"{k} {v:.0%}" for k, v in phases.items()))


def report_compiled(name: str, r: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Steady steps compiled against eager, per round, and the warm-up's extra seconds (the
    compile): the first round's with an empty inductor cache, the later ones' with it filled."""
    print(
        f"\n{name} at {args.resolution} px, batch 1, {args.steps} steps (steady state after "
        f"{WARMUP_STEPS}), cached inputs, {args.rounds} rounds"
    )
    labels = {"warm": "eager", "compiled": "compiled", "compiled-nchw": "compiled, NCHW"}
    for mode, label in labels.items():
        for i, m in enumerate(r[mode]):
            extra = m["warmup_s"] - r["warm"][i]["warmup_s"]
            compile_s = f"  compile {extra:6.1f} s" if mode in COMPILED else ""
            print(
                f"  {label:24s} {m['images_per_s']:7.3f} img/s  warm-up {m['warmup_s']:6.1f} s"
                f"{compile_s}  peak RSS {m['peak_rss_mb']:7.0f} MB"
            )
    for mode in COMPILED:
        _ratios(f"{labels[mode]} / eager steps", r[mode], r["warm"], "images_per_s")
    _phases(r, {m: labels[m] for m in ("warm", "compiled")})


if __name__ == "__main__":
    main()
