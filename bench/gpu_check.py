"""`make gpu-check`: the SD 1.5-shaped pipeline on a lent GPU, fp16 and bf16, no network.

    python bench/gpu_check.py                 # CUDA: 512 px, 30 steps per run, 4 images
    python bench/gpu_check.py --sdxl          # CUDA: SDXL-shaped at 1024 px, VAE in fp32
    python bench/gpu_check.py --small         # anywhere: tiny model, 64 px, 2 steps, 1 image
    python bench/gpu_check.py --small --sdxl  # anywhere: the tiny SDXL the same way

Trains with cached latents in each precision with gradient checkpointing off and on, resumes
once (half way, compared with the straight run), then draws with the LoRA unfused and fused.
Logs steps/s, images/s and peak memory (GPU, or RSS on a CPU) per run; --json keeps them.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("gpu_check")


def drawings(out: Path, n: int, size: int) -> Path:
    """n random drawings with captions as a saved dataset."""
    from kshd.data.dataset import save_dataset
    from kshd_world.samples import noise_drawings

    save_dataset(noise_drawings(out, n, size), out / "dataset", 0.0, "drawn by KSH drawing style")
    return out / "dataset"


def model_folder(work: Path, small: bool, sdxl: bool) -> str:
    """The tiny SD or SDXL (--small), or the SD 1.5- or SDXL-shaped one, all with CLIP's BPE
    tokenizer."""
    from kshd_world.clip_bpe import clip_bpe_tokenizer
    from kshd_world.sd15_shaped import build_sd15_shaped
    from kshd_world.sdxl_shaped import build_sdxl_shaped
    from kshd_world.tiny import build_tiny_sd
    from kshd_world.tiny_sdxl import build_tiny_sdxl

    if small:
        (build_tiny_sdxl if sdxl else build_tiny_sd)(work / "tiny", 0)
        return str(work / "tiny")
    build = build_sdxl_shaped if sdxl else build_sd15_shaped
    return str(build(work / "shaped", clip_bpe_tokenizer()))


def _reset(device: str) -> None:
    """A clean slate per run: one accelerate precision per process, peak memory from zero."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float:
    from kshd.training.result import peak_rss_mb

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()


def train_run(model: str, split, args, device: str, precision: str, ckpt_gc: bool, root: Path):
    """One training run; returns its figures and the trained LoRA (prefixed keys, on the CPU)."""
    from kshd.adapters.registry import build_adapter
    from kshd.config.compose import defaults
    from kshd.training.components import load_components
    from kshd.training.loop import CheckpointPolicy, train_lora

    _reset(device)
    s = defaults(
        "train",
        resolution=args.resolution,
        center_crop=True,
        batch_size=1,
        max_train_steps=args.steps,
        mixed_precision=precision,
        gradient_checkpointing=ckpt_gc,
        checkpointing_steps=max(args.steps // 2, 1),
        seed=1,
    )
    c, stamps = load_components(model, no_half_vae=args.sdxl), []  # SDXL's VAE overflows in fp16
    policy = CheckpointPolicy(root, s.checkpointing_steps, None, True, f"{precision}-{ckpt_gc}")

    def on_log(row: dict) -> None:  # step times, for steps/s after the first step
        stamps.append(time.perf_counter())

    result = train_lora(c, split, s, on_log, policy, root.parent / "cache")
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    figures = {
        "run": f"train {precision} checkpointing={'on' if ckpt_gc else 'off'}",
        "steps_per_s": rate,
        "peak_mb": _peak_mb(device),
        "resumed_from": result.resumed_from,
        "final_loss": result.history[-1]["loss"],
    }
    return figures, build_adapter(s.adapter, s.rank, s.alpha).tensors(c.unet)


def resume_once(model: str, split, args, device: str, precision: str, straight, work: Path):
    """Resume a copy of the straight run's half-way checkpoint; compare the final LoRAs."""
    half = max(args.steps // 2, 1)
    src, dst = work / f"ckpt-{precision}-False", work / "ckpt-resume"
    shutil.copytree(src / f"checkpoint-{half}", dst / f"checkpoint-{half}")
    figures, lora = train_run(model, split, args, device, precision, False, dst)
    diff = max((lora[k] - straight[k]).abs().max().item() for k in lora)
    return figures | {"run": f"resume {precision} from step {half}", "max_lora_diff": diff}


def draw_runs(model: str, lora_dir: Path, args, device: str) -> list[dict]:
    """args.images images at once with the LoRA loaded (unfused), then fused into the weights."""
    from kshd.models.loading import load_sd_pipeline

    _reset(device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = load_sd_pipeline(model, None, None, torch.device(device), dtype)
    pipe.load_lora_weights(str(lora_dir), use_safetensors=True)
    rows = []
    for mode in ("unfused", "fused"):
        if mode == "fused":
            pipe.fuse_lora()
        _reset(device)
        start = time.perf_counter()
        pipe(
            ["drawn by KSH drawing style, a girl"] * args.images,
            num_inference_steps=args.draw_steps,
            height=args.resolution,
            width=args.resolution,
            generator=torch.Generator("cpu").manual_seed(0),
        )
        seconds = time.perf_counter() - start
        speed = args.images / seconds
        rows.append({"run": f"draw {mode}", "images_per_s": speed, "peak_mb": _peak_mb(device)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny model, 64 px, 2 steps (CPU test)")
    p.add_argument("--sdxl", action="store_true", help="SDXL-shaped, 1024 px (--small: tiny SDXL)")
    p.add_argument("--precisions", nargs="+", help="default: fp16 bf16 (CUDA), bf16 (--small)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        log.error("gpu-check: no CUDA device here; `--small` runs the same check on the CPU")
        sys.exit(2)
    args.resolution, args.steps, args.images, args.draw_steps = (
        (64, 2, 1, 2) if args.small else (1024 if args.sdxl else 512, 30, 4, 30)
    )
    precisions = args.precisions or (["bf16"] if args.small else ["fp16", "bf16"])
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    from datasets import load_from_disk

    model = model_folder(work, args.small, args.sdxl)
    split = load_from_disk(str(drawings(work / "data", 4, args.resolution)))["train"]
    from kshd.adapters.files import write_diffusers
    from kshd.adapters.lora import diffusers_state

    rows, first = [], None
    for precision in precisions:
        for ckpt_gc in (False, True):
            root = work / f"ckpt-{precision}-{ckpt_gc}"
            figures, lora = train_run(model, split, args, device, precision, ckpt_gc, root)
            rows.append(figures)
            log.info("%s", figures)
            first = first or (precision, lora)
    rows.append(resume_once(model, split, args, device, *first, work))
    write_diffusers(diffusers_state(first[1], 1.0), work)  # the defaults' alpha = rank
    rows += draw_runs(model, work, args, device)
    report(rows, device, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[dict], device: str, args) -> None:
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    memory = "peak GPU MB" if device == "cuda" else "peak RSS MB"
    shape = "SDXL" if args.sdxl else "SD 1.x"
    log.info("\ngpu-check (%s) on %s at %d px, %d steps per run", shape, where, args.resolution,
             args.steps)  # fmt: skip
    for r in rows:
        if "images_per_s" in r:
            speed = f"{r['images_per_s']:7.3f} img/s"
        else:
            speed = f"{r['steps_per_s'] or float('nan'):7.3f} step/s"
        extra = f"  max |LoRA diff| {r['max_lora_diff']:.2e}" if "max_lora_diff" in r else ""
        log.info("  %-36s %s  %s %8.0f%s", r["run"], speed, memory, r["peak_mb"], extra)


if __name__ == "__main__":
    main()
