"""Drawing latency: no LoRA vs LoRA unfused vs LoRA fused, side by side in one run.

    python bench/generate.py                         # SD1.5-shaped random UNet, 128 px, CPU
    python bench/generate.py --rank 64 --steps 6 --repeats 5

The engine merges the LoRA into the UNet while the strength does not change; the target is a
fused engine within 3% of the base model. "Unfused" is the same engine with the adapter layers
active but not merged (what diffusers does with `cross_attention_kwargs={"scale": ...}`). Runs
are interleaved in a shuffled order per round so machine noise hits every mode alike; the
median of each mode is reported as a ratio to the base model.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("bench.generate")


def _build_sd15_shaped(out: Path) -> None:
    path = Path(__file__).with_name("train.py")
    spec = importlib.util.spec_from_file_location("bench_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_sd15_shaped(out)


def _random_lora(model: Path, out: Path, rank: int) -> Path:
    """A LoRA of the given rank on the attention projections, with non-zero random weights."""
    from diffusers import UNet2DConditionModel

    from kshd.adapters.files import write_diffusers
    from kshd.adapters.registry import build_adapter
    from kshd.config.compose import defaults

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    lora = build_adapter(defaults("train.adapter", target_modules=targets), rank, rank)
    lora.inject(unet)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    out.mkdir(parents=True, exist_ok=True)
    return write_diffusers(lora.diffusers_tensors(lora.tensors(unet)), out)


def _unfused(engine) -> None:
    """Adapters active at strength 1 but not merged (the engine believes 1.0 is in place, so
    `generate` does not merge)."""
    from kshd.drawing.engine import ADAPTER

    engine.set_lora_scale(0.0)
    engine.txt2img.enable_lora()
    for _, module in engine._lora_layers():
        module.set_scale(ADAPTER, 1.0)
    engine._scale = 1.0


def _fused(engine) -> None:
    """Merged at strength 1, whatever state the previous mode left."""
    engine._scale = None
    engine.set_lora_scale(1.0)
    assert all(m.merged for _, m in engine._lora_layers())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "kshd"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    torch.set_num_threads(torch.get_num_threads())

    from kshd.drawing.engine import Engine, EngineSettings
    from kshd.drawing.request import Request

    with tempfile.TemporaryDirectory() as tmp:
        model, lora = Path(tmp) / "sd15", Path(tmp) / "lora"
        log.info("building an SD1.5-shaped random model and a rank-%d LoRA ...", args.rank)
        _build_sd15_shaped(model)
        _random_lora(model, lora, args.rank)
        base = Engine(EngineSettings(str(model), device="cpu"))
        with_lora = Engine(EngineSettings(str(model), lora=str(lora), device="cpu"))
        req = dict(
            prompt="an anime girl, drawn by KSH drawing style",
            steps=args.steps,
            width=args.resolution,
            height=args.resolution,
            seed=0,
            sampler="euler",
            positive_prefix="",  # the prompt alone, as measured before the conf/ defaults
            negative_prefix="",
        )
        modes = {
            "no LoRA": (base, lambda e: None),
            "LoRA unfused": (with_lora, _unfused),
            "LoRA fused": (with_lora, _fused),
        }
        times: dict[str, list[float]] = {m: [] for m in modes}
        order = list(modes)
        for rep in range(args.repeats + 1):  # the first round warms up and is not counted
            random.Random(rep).shuffle(order)  # no mode always runs first or last
            for mode in order:
                engine, prepare = modes[mode]
                prepare(engine)
                start = time.perf_counter()
                engine.generate(Request(**req), save=False)
                if rep:
                    times[mode].append(time.perf_counter() - start)
    ref = statistics.median(times["no LoRA"])
    log.info(
        "%d px, %d steps, rank %d, %d repeats (median):", args.resolution, args.steps, args.rank,
        args.repeats,
    )  # fmt: skip
    for mode, values in times.items():
        log.info("  %-13s %.3f x no LoRA", mode, statistics.median(values) / ref)


if __name__ == "__main__":
    main()
