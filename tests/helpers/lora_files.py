"""LoRA folders for tests, written by the one save function the train stage uses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import yaml

from kshd.adapters.base import Adapter
from kshd.adapters.files import KohyaInfo
from kshd.adapters.registry import build_adapter
from kshd.config.compose import defaults

TRIGGER = "drawn by KSH drawing style"
# the `trained` fixture's run: 10 samples, batch 2, 2 epochs = 10 steps
TRAIN_SETTINGS = dict(resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=7)

# A tiny run's record: 64 px, batch 2, lr 1e-2 on the ten bundled samples.
TINY_INFO = KohyaInfo(
    base_model="tiny",
    resolution=64,
    trigger=TRIGGER,
    steps=0,
    epochs=0,
    batch_size=2,
    learning_rate=1e-2,
    num_images=10,
    seed=0,
)


def make_adapter(rank: int, alpha: float, **changes) -> Adapter:
    """The adapter `train.adapter` builds at `rank` / `alpha`: conf's node (that of
    `changes["kind"]`, conf/train/adapter/<kind>.yaml, where given) with `changes`."""
    kind = changes.get("kind")
    node = {}
    if kind:
        path = Path(__file__).resolve().parents[2] / "conf" / "train" / "adapter" / f"{kind}.yaml"
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
    return build_adapter(defaults("train.adapter", **{**node, **changes}), rank, alpha)


def tiny_info(**changes) -> KohyaInfo:
    """TINY_INFO with the fields a test cares about changed (steps, seed, ...)."""
    return replace(TINY_INFO, **changes)


def randomize_lora_b(model, seed: int, scale: float) -> None:
    """Give a fresh adapter non-zero `lora_B` weights, so the LoRA changes the model's output
    (peft starts `lora_B` at zero, which would make every strength look alike)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def unet_with_and_without(sd: Path, lora_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet of the pipeline in `sd` on fixed latents and text states, before and after
    diffusers' `load_lora_weights` of `lora_dir`: a trained LoRA loads and changes it."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd, safety_checker=None)
    g = torch.Generator().manual_seed(0)
    latents, hidden = torch.randn(1, 4, 32, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        base = pipe.unet(latents, 500, encoder_hidden_states=hidden).sample
        pipe.load_lora_weights(str(lora_dir))
        return base, pipe.unet(latents, 500, encoder_hidden_states=hidden).sample
