"""Training throughput: cached latents/text embeddings vs the reference loop, side by side.

    python bench/train.py                    # tiny model and an SD1.5-shaped one at 128 px (CPU)
    python bench/train.py --models sd15 --resolution 256 --steps 8

The reference loop (train.cache_latents=false) runs the VAE and the text encoder and tokenizes
every item at every step. Each mode runs in its own process so peak RSS is its own. Prints
ratios measured in one run; absolute seconds on a shared machine mean little.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_sd15_shaped(out: Path) -> None:
    """SD 1.5's UNet, VAE and text-encoder shapes with random weights (no download)."""
    from kshd.builders.clip_bpe import clip_bpe_tokenizer
    from kshd.builders.sd15_shaped import build_sd15_shaped as build

    build(out, clip_bpe_tokenizer())  # SD 1.x's own tokenizer and special-token ids


def dataset(out: Path, n: int, size: int) -> Path:
    from kshd.data.dataset import save_dataset
    from kshd.data.samples import noise_drawings

    save_dataset(noise_drawings(out, n, size), out / "dataset", 0.0, "drawn by KSH drawing style")
    return out / "dataset"


def worker(args: argparse.Namespace) -> None:
    """One training run in this process; prints its figures as JSON."""
    from datasets import load_from_disk

    from kshd.training.loop import train_lora
    from kshd.training.settings import TrainSettings, load_components, peak_rss_mb

    split = load_from_disk(args.dataset)["train"]
    c = load_components(args.model, unet=False)  # as the train stage loads them
    s = TrainSettings(
        resolution=args.resolution,
        batch_size=1,
        max_train_steps=args.steps,
        cache_latents=args.mode != "live",
        learning_rate=1e-4,
        seed=1,
    )
    start = time.perf_counter()
    result = train_lora(c, split, s, cache_dir=Path(args.cache) if args.mode != "live" else None)
    total = time.perf_counter() - start
    steady = result.history[-1]["images_per_s"]
    print(json.dumps({"images_per_s": steady, "total_s": total, "peak_rss_mb": peak_rss_mb()}))


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
    env = dict(os.environ, TQDM_DISABLE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "sd15"])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--model"), p.add_argument("--dataset"), p.add_argument("--cache")
    p.add_argument("--mode", choices=["live", "cold", "warm"])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        return worker(args)
    from kshd.builders.tiny import build_tiny_models

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = dataset(work / "data", args.images, args.resolution)
    for name in args.models:
        if name == "tiny":
            model = str(build_tiny_models(work / "tiny")["sd"])
        else:
            build_sd15_shaped(work / "sd15")
            model = str(work / "sd15")
        cache = work / f"cache-{name}"
        r = {mode: run_mode(model, data, cache, mode, args) for mode in ("live", "cold", "warm")}
        print(
            f"\n{name} at {args.resolution} px, batch 1, {args.steps} steps, {args.images} images"
        )
        for mode, label in [
            ("live", "reference loop (VAE + text encoder each step)"),
            ("cold", "cached, first run (cache filled in this run)"),
            ("warm", "cached, rerun (cache reused)"),
        ]:
            m = r[mode]
            print(
                f"  {label:48s} {m['images_per_s']:7.2f} img/s  run {m['total_s']:6.1f} s  "
                f"peak RSS {m['peak_rss_mb']:7.0f} MB"
            )
        speed = r["warm"]["images_per_s"] / r["live"]["images_per_s"]
        rss = r["warm"]["peak_rss_mb"] / r["live"]["peak_rss_mb"]
        print(f"  training speed-up with the cache: {speed:.2f}x; peak RSS cached/live: {rss:.2f}")


if __name__ == "__main__":
    main()
