"""A line-art ControlNet for the demo world's base, trained here, so that the demo's sketch to
style (the project's final goal) is measured with a ControlNet that follows lines.

`make world-controlnet` (`python -m kshd_world.world_controlnet models/world/sd
models/world-controlnet`) copies the world
UNet's encoder (`ControlNetModel.from_unet`, its output convolutions zero, as the ControlNet paper
starts) and trains it, the UNet frozen, to draw the world's plain drawings back from their line
art (`lineart_standard`, the preprocessor the evaluation uses), half of the captions empty so that
the lines alone are followed (the paper's 50%). It then measures how much of held-out drawings'
lines the base keeps with it and with the untrained copy (`evaluation.sketch.line_overlap`), and
writes the ControlNet in fp16 (2.7 MB, committed beside the world's models) with a manifest: the
scripts' hash, the seed, the budget, the loss curve, those measures, the seconds and the weight
file's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kshd.fileio import atomic_dir
from kshd_world.sd_folder import SD15_DDPM
from kshd_world.world import character, draw
from kshd_world.world_sd import RESOLUTION, Curve, _embed, _lr

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
CONTROLNET_SEEDS = 45_000  # its drawings: apart from the base's and the held-out ones
HELD_OUT = 10_000  # the world's held-out characters, for the measure
SCRIPTS = (
    "kshd_world/world.py",
    "kshd_world/world_controlnet.py",
    "kshd/drawing/control_images.py",
)
EMBEDDING = (16, 32, 64, 64)  # the control image's encoder: 128 px down to the 16 px latents


@dataclass(frozen=True)
class Budget:
    steps: int
    images: int
    batch: int
    lr: float
    measured: int  # held-out drawings the result is measured on


FULL = Budget(steps=1500, images=1500, batch=16, lr=5e-4, measured=16)
SMOKE = Budget(steps=2, images=4, batch=2, lr=5e-4, measured=2)


def scripts_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in SCRIPTS:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    return h.hexdigest()


def _drawings(seeds) -> list:
    return [draw(character(s), "plain", (RESOLUTION, RESOLUTION)).convert("RGB") for s in seeds]


def _control(images) -> torch.Tensor:
    from kshd.drawing.control_images import control_image

    arr = np.stack([np.asarray(control_image(im, "lineart_standard")) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def training_data(sd_dir: Path, n: int):
    """(latents scaled as the UNet sees them, control images, captions) of n plain drawings."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd_dir, subfolder="vae", dtype=torch.float32)
    latents, controls, captions = [], [], []
    for s0 in range(CONTROLNET_SEEDS, CONTROLNET_SEEDS + n, 100):
        seeds = range(s0, min(s0 + 100, CONTROLNET_SEEDS + n))
        images = _drawings(seeds)
        pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images]))
        pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1
        latents.append(vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor)
        controls.append(_control(images))
        captions += [character(s).caption() for s in seeds]
    return torch.cat(latents), torch.cat(controls), captions


def train(sd_dir: Path, seed: int, budget: Budget):
    """The ControlNet and its loss curve (the UNet and the text encoder frozen)."""
    from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    latents, controls, captions = training_data(sd_dir, budget.images)
    text = CLIPTextModel.from_pretrained(sd_dir, subfolder="text_encoder", dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(sd_dir, subfolder="tokenizer")
    states, index = _embed(text.eval(), tokenizer, captions)
    empty, _ = _embed(text, tokenizer, [""])
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet", dtype=torch.float32)
    unet.eval().requires_grad_(False)
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING)
    scheduler = DDPMScheduler(**SD15_DDPM)
    opt = torch.optim.AdamW(net.parameters(), lr=budget.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    curve, start = Curve(every=25), time.perf_counter()
    for step in range(budget.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(budget.lr, step, budget.steps, warmup=50)
        idx = torch.randint(0, len(latents), (budget.batch,), generator=g)
        cond = states[index[idx]].clone()
        cond[torch.rand(budget.batch, generator=g) < 0.5] = empty[0]
        noise = torch.randn(latents[idx].shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (budget.batch,), generator=g)
        noisy = scheduler.add_noise(latents[idx], noise, t)
        down, mid = net(noisy, t, cond, controlnet_cond=controls[idx], return_dict=False)
        pred = unet(noisy, t, cond, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample  # fmt: skip
        loss = (pred - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        curve.add(step, loss.item())
        if step % 100 == 0:
            log.info("controlnet step %d/%d loss %.4f (%.0f s)", step, budget.steps, loss.item(),
                     time.perf_counter() - start)  # fmt: skip
    return net.eval(), curve


@torch.no_grad()
def lines_kept(sd_dir: Path, net, n: int, seed: int) -> float:
    """The mean line overlap of n held-out drawings redrawn from their line art by the base
    with `net` (their captions, 12 Euler a steps, CFG 5)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionControlNetPipeline

    from kshd.evaluation.sketch import line_overlap
    from kshd.models.loading import load_sd_pipeline

    base = load_sd_pipeline(str(sd_dir), None, None, torch.device("cpu"), torch.float32)
    pipe = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=net.to(torch.float32))
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    seeds = range(HELD_OUT, HELD_OUT + n)
    images = _drawings(seeds)
    kept = []
    for s, im in zip(seeds, images, strict=True):
        from kshd.drawing.control_images import control_image

        lines = control_image(im, "lineart_standard")
        out = pipe(character(s).caption(), image=lines, num_inference_steps=12, guidance_scale=5,
                   generator=torch.Generator().manual_seed(seed)).images[0]  # fmt: skip
        kept.append(line_overlap(out, lines))
    return round(float(np.mean(kept)), 4)


def build(sd_dir: Path, out: Path, seed: int, budget: Budget) -> dict:
    """Train the ControlNet of the SD folder `sd_dir`, measure it, write `out` and its manifest."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.set_num_threads(2)
    start = time.perf_counter()
    net, curve = train(sd_dir, seed, budget)
    seconds = round(time.perf_counter() - start, 1)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet", dtype=torch.float32)
    torch.manual_seed(seed)
    untrained = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING)
    manifest = {
        "scripts_sha256": scripts_hash(), "seed": seed, "budget": asdict(budget),
        "torch": torch.__version__, "loss": curve.points, "train_seconds": seconds,
        "lines_kept": {"trained": lines_kept(sd_dir, net, budget.measured, seed),
                       "untrained": lines_kept(sd_dir, untrained, budget.measured, seed)},
    }  # fmt: skip
    with atomic_dir(out) as tmp:
        net.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        weights = tmp / WEIGHTS
        manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.info("controlnet: %s", {k: v for k, v in manifest.items() if k != "loss"})
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sd", type=Path, help="the base: the world's SD folder")
    p.add_argument("out", type=Path, help="the ControlNet's folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps (the tests' run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.sd, args.out, args.seed, SMOKE if args.smoke else FULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
