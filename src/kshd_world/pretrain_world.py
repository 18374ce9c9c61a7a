"""Pretrain the demo world's models: a tiny SD 1.x base on the plain style and a tiny CLIP.

`make world-models` (`python -m kshd_world.pretrain_world models/world`) trains, from one seed,
the CLIP (kshd_world.world_clip), the VAE and then the text encoder and UNet
(kshd_world.world_sd), and writes them as fp16 safetensors in diffusers / transformers folders
with a manifest beside them: the hash of the scripts that made them, the seed, the steps, the loss
curves, the seconds, and each weight file's sha256. The weights are committed, so the demo and CI
never pretrain; tests/test_world_models.py checks them against the manifest and runs this script
for a few steps to keep it alive.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kshd.fileio import atomic_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SD_DIR, CLIP_DIR = "sd", "clip"
UNET_THREADS = 2
# What decides the weights: a change to any of these needs a new pretraining run.
SCRIPTS = ("world.py", "world_sd.py", "world_clip.py", "pretrain_world.py", "sd_folder.py")


@dataclass(frozen=True)
class Budget:
    """How long each part trains: the committed run's and the smoke test's."""

    clip_steps: int
    vae_steps: int
    vae_images: int
    vae_batch: int
    vae_crop: int
    vae_lr: float
    unet_steps: int
    unet_images: int
    unet_batch: int
    unet_lr: float


FULL = Budget(
    clip_steps=500,
    vae_steps=3500,
    vae_images=1500,
    vae_batch=8,
    vae_crop=64,
    vae_lr=3e-3,
    unet_steps=2400,
    unet_images=3000,
    unet_batch=16,
    unet_lr=2e-3,
)
SMOKE = Budget(
    clip_steps=2,
    vae_steps=2,
    vae_images=4,
    vae_batch=2,
    vae_crop=64,
    vae_lr=3e-3,
    unet_steps=2,
    unet_images=8,
    unet_batch=2,
    unet_lr=1e-3,
)


def scripts_hash() -> str:
    """sha256 over the scripts that decide the weights (names and bytes, in a fixed order)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in SCRIPTS:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()


def weight_hashes(root: Path) -> dict[str, str]:
    """sha256 of every safetensors file under root, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.safetensors"))
    }


def _save_sd(out: Path, vae, text, unet) -> None:
    """The SD folder with CLIP's tokenizer files and SD 1.5's scheduler, weights in fp16."""
    from kshd_world.clip_bpe import clip_bpe_tokenizer, write_clip_bpe_files
    from kshd_world.sd_folder import save_sd_pipeline

    save_sd_pipeline(out, unet, vae, text, clip_bpe_tokenizer())
    write_clip_bpe_files(out / "tokenizer")
    slim(out)


def slim(root: Path) -> None:
    """Halve every weight file under root in place (the configs stay fp32, so from_pretrained
    computes in fp32 on a CPU) and drop tokenizer.json, which vocab.json and merges.txt rebuild
    (as SD 1.x's folders ship them): the committed world stays small."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in root.rglob("*.safetensors"):
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(half, path, metadata=meta)
    for path in root.rglob("tokenizer.json"):
        path.unlink()


def _clip_job(out: Path, seed: int, steps: int, held_out: bool) -> dict:
    from kshd_world.world_clip import train_world_clip

    start = time.perf_counter()
    stats = train_world_clip(out, seed, steps, **({} if held_out else {"held_out": ()}))
    return {**stats, "wall_seconds": round(time.perf_counter() - start, 1)}


def pretrain(
    out_dir: Path, seed: int, budget: Budget, held_out: bool = True, reuse: Path | None = None
) -> dict:
    """Train every model of the world into out_dir (atomically) and return the manifest.

    The CLIP trains in a second process on the other core while the VAE trains here, each on one
    thread (the same bits on any machine); the UNet then trains on both cores, conditioned on
    the CLIP's text tower. `reuse`: take the CLIP and the VAE of an earlier world folder (their
    manifest entries carried over) and train only the UNet."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    manifest: dict = {
        "scripts_sha256": scripts_hash(),
        "seed": seed,
        "budget": asdict(budget),
        "torch": torch.__version__,
        "threads": {"clip": 1, "vae": 1, "unet": UNET_THREADS},
        "machine": platform.machine(),
    }
    threads = torch.get_num_threads()
    try:
        with atomic_dir(out_dir) as tmp:
            if reuse is None:
                torch.set_num_threads(1)
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    clip = pool.submit(_clip_job, tmp / CLIP_DIR, seed, budget.clip_steps, held_out)
                    vae = _train_vae(manifest, seed, budget)
                    manifest["clip"] = clip.result()
            else:
                vae = _reuse(manifest, reuse, tmp)
            torch.set_num_threads(UNET_THREADS)
            _train_sd(tmp, manifest, vae, seed, budget)
            slim(tmp / CLIP_DIR)
            manifest["weights_sha256"] = weight_hashes(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    finally:
        torch.set_num_threads(threads)
    return manifest


def _reuse(manifest: dict, earlier: Path, tmp: Path):
    """The CLIP folder and the VAE of an earlier run, with what its manifest said of them."""
    from diffusers import AutoencoderKL

    old = json.loads((earlier / MANIFEST).read_text(encoding="utf-8"))
    shutil.copytree(earlier / CLIP_DIR, tmp / CLIP_DIR)
    for part in ("clip", "vae"):
        manifest[part] = {**old[part], "reused_from_scripts_sha256": old["scripts_sha256"]}
    return AutoencoderKL.from_pretrained(earlier / SD_DIR / "vae", torch_dtype=torch.float32)


def _train_vae(manifest: dict, seed: int, budget: Budget):
    from kshd_world import world_sd

    start = time.perf_counter()
    vae, curve = world_sd.train_vae(
        seed, budget.vae_steps, budget.vae_images, budget.vae_batch, budget.vae_crop, budget.vae_lr
    )
    manifest["vae"] = {"loss": curve.points, "seconds": round(time.perf_counter() - start, 1)}
    return vae


def _train_sd(tmp: Path, manifest: dict, vae, seed: int, budget: Budget) -> None:
    """The UNet on the VAE's scaled latents and the CLIP's text states; the SD folder."""
    from kshd_world import world_sd
    from kshd_world.clip_bpe import clip_bpe_tokenizer

    start = time.perf_counter()
    latents, captions = world_sd.encode_plain_world(vae, budget.unet_images)
    std = float(latents.std())
    vae.register_to_config(scaling_factor=1.0 / std)  # SD's 0.18215, measured the same way
    manifest["vae"]["latent_std"] = round(std, 5)
    text, tokenizer = world_sd.clip_text_encoder(tmp / CLIP_DIR), clip_bpe_tokenizer()
    unet, curve = world_sd.train_unet(
        latents / std,
        captions,
        text,
        tokenizer,
        seed,
        budget.unet_steps,
        budget.unet_batch,
        budget.unet_lr,
    )
    manifest["unet"] = {"loss": curve.points, "seconds": round(time.perf_counter() - start, 1)}
    _save_sd(tmp / SD_DIR, vae, text, unet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few steps of each part (tests)")
    parser.add_argument("--reuse", type=Path, help="an earlier world folder: train only its UNet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    budget = SMOKE if args.smoke else FULL
    pretrain(args.out_dir, args.seed, budget, held_out=not args.smoke, reuse=args.reuse)
    log.info("world models in %s after %.0f s", args.out_dir, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
