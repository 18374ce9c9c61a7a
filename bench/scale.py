"""Scale: the five stages on N synthetic 512 px drawings, each stage's time and peak RSS.

    python bench/scale.py                 # N = 5,700, the artist's real corpus size
    python bench/scale.py -n 500 -n 1500  # smaller, several sizes in one run
    python bench/scale.py --sdxl          # the same on the tiny SDXL (two text encoders cached)

Runs prepare -> caption (tiny BLIP-2) -> dataset -> train (a few steps, tiny SD) -> evaluate
(tiny CLIP over every training drawing for `memorization`) as DVC would: one process per stage,
so each stage's peak RSS is its own (from wait4's rusage). What must not grow with N is the
memory beyond the tables themselves; time grows with N wherever every drawing is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("bench.scale")
STAGES = ("prepare", "caption", "dataset", "train", "evaluate")


def drawing(i: int, size: int) -> Image.Image:
    """A procedural drawing with paper grain, so the PNG weighs what a scanned drawing does."""
    from kshd_world.samples import Sample, draw

    rng = random.Random(i)
    img = draw(Sample(f"d{i}", girl=rng.random() < 0.6, size=(size, size)), seed=i).convert("RGB")
    grain = np.random.default_rng(i).integers(-6, 7, (size, size, 1), dtype=np.int16)
    arr = np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def tags(i: int) -> str:
    """A tag caption as a sidecar .txt would hold it (booru style, ~20 tags)."""
    rng = random.Random(i)
    words = ["1girl", "solo", "smile", "long hair", "short hair", "blue eyes", "green eyes"]
    words += ["school uniform", "hoodie", "outdoors", "sky", "upper body", "looking at viewer"]
    words += ["blonde hair", "black hair", "open mouth", "closed eyes", "simple background"]
    return ", ".join(rng.sample(words, 12))


def make_drawings(folder: Path, n: int, size: int) -> int:
    """N drawings and their tag sidecars (written once; a larger N reuses the smaller one's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"drawing_{i:05d}.png"
        if not path.exists():
            drawing(i, size).save(path, format="PNG")
        if not path.with_suffix(".txt").exists():
            path.with_suffix(".txt").write_text(tags(i), encoding="utf-8")
    return sum((folder / f"drawing_{i:05d}.png").stat().st_size for i in range(n))


def project(
    root: Path, raw: Path, size: int, steps: int, cache_latents: bool, sdxl: bool = False
) -> Path:
    """A fresh project folder: params.yaml (demo profile, real image size) and N raw drawings."""
    from kshd.config.compose import compose_conf, write_params

    repo = Path(__file__).resolve().parents[1]
    cfg = compose_conf(
        [
            "+experiment=demo",
            *(["model=tiny_sdxl"] if sdxl else []),
            f"data.raw_dir={raw}",
            f"prepare.resolution={size}",
            "dataset.holdout_fraction=0.05",
            f"train.max_train_steps={steps}",
            "train.validation_epochs=0",
            "train.checkpointing_steps=100000",
            f"train.cache_latents={str(cache_latents).lower()}",
            # drawing the evaluation images costs the same at any N: one prompt, one seed
            "evaluate.prompts=['drawn by KSH drawing style, a girl']",
            "evaluate.seeds=[0]",
            "evaluate.lora_scales=[1.0]",
            "evaluate.checkpoints=false",
            "evaluate.style_references=${data.dataset_dir}",  # its held-out drawings
            "tracking.mode=disabled",
            f"tiny.dir={root.parent / 'tiny'}",
        ],
        conf_dir=repo / "conf",
    )
    root.mkdir(parents=True, exist_ok=True)
    write_params(cfg, root / "params.yaml")
    for name in ("world", "world-controlnet"):  # the demo's committed models, by relative path
        link = root / "models" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(repo / "models" / name, target_is_directory=True)
    # The tiny models, as `make demo` builds them before `dvc repro` (stages only load them); in
    # a child, so this process stays small and each stage's forked peak RSS is its own.
    code = "import sys, pathlib; from kshd_world.demo import demo_models as m; "
    code += "m(pathlib.Path(sys.argv[1]), sys.argv[2:])"
    tiny = f"tiny.dir={root.parent / 'tiny'}"
    subprocess.run([sys.executable, "-c", code, str(repo), tiny], check=True)
    return root


def run_stage(root: Path, stage: str, logfile: Path) -> dict:
    """One stage in its own process: wall seconds and that process's peak RSS."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("DVC_ROOT", None)
    start = time.perf_counter()
    with logfile.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"kshd.stages.{stage}"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"stage {stage} failed ({code}); its log: {logfile}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def bench(
    work: Path, n: int, size: int, steps: int, cache_latents: bool, sidecars: bool,
    sdxl: bool = False,
) -> dict:  # fmt: skip
    start = time.perf_counter()
    raw_bytes = make_drawings(work / "raw", n, size)
    gen = time.perf_counter() - start
    # the raw folder of the largest N holds the smaller ones' files; link only the first n
    raw = work / f"raw-{n}{'-tags' if sidecars else ''}"
    raw.mkdir(exist_ok=True)
    suffixes = (".png", ".txt") if sidecars else (".png",)
    for i in range(n):
        for suffix in suffixes:
            link = raw / f"drawing_{i:05d}{suffix}"
            if not link.exists():
                link.symlink_to(work / "raw" / link.name)
    name = f"n{n}-sdxl" if sdxl else f"n{n}"
    root = project(raw.with_name(name), raw, size, steps, cache_latents, sdxl)
    log.info("N=%d: %d drawings of %d px (%.0f MB) in %.0f s", n, n, size, raw_bytes / 1e6, gen)
    rows = {}
    for stage in STAGES:
        rows[stage] = run_stage(root, stage, work / f"n{n}.log")
        log.info("N=%d %-8s %6.1f s  peak RSS %5d MB", n, stage, *rows[stage].values())
    return {"n": n, "raw_mb": round(raw_bytes / 1e6), "stages": rows}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="drawings (repeatable); 5700")
    parser.add_argument("--size", type=int, default=512, help="drawing side in px")
    parser.add_argument("--steps", type=int, default=4, help="training steps")
    parser.add_argument(
        "--cache-latents",
        action="store_true",
        help="encode every training drawing first, as a real run does (N VAE passes)",
    )
    parser.add_argument(
        "--sidecars",
        action="store_true",
        help="captions from tag .txt sidecars instead of the tiny BLIP-2 (its time is per image)",
    )
    parser.add_argument("--sdxl", action="store_true", help="train on the tiny SDXL")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="kshd-scale-") as tmp:
        work = args.work or Path(tmp)
        results = [
            bench(work, n, args.size, args.steps, args.cache_latents, args.sidecars, args.sdxl)
            for n in sorted(args.n or [5700])
        ]
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def table(results: list[dict]) -> str:
    """Markdown: one row per stage, `seconds / peak RSS MB` per N."""
    head = "| stage | " + " | ".join(f"N={r['n']:,}" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for stage in STAGES:
        cells = [
            f"{r['stages'][stage]['seconds']} s / {r['stages'][stage]['peak_rss_mb']} MB"
            for r in results
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
