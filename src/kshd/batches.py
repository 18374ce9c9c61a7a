"""Training batches: resize, crop, flip and normalise drawings; tokenize captions.

Augmentation is decided by (seed, epoch, index) rather than a global RNG, so an epoch sees the
same crops and flips whether a run went straight through or was resumed from a checkpoint.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from PIL import Image

from kshd.images import resize_short_side


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    key = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return random.Random(int.from_bytes(key[:8], "little"))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> CHW float in [-1, 1], the VAE's input range."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def augment(
    img: Image.Image, resolution: int, center_crop: bool, random_flip: bool, rng: random.Random
) -> Image.Image:
    """As train_text_to_image_lora.py: resize short side, crop to a square, maybe flip."""
    img = resize_short_side(img.convert("RGB"), resolution, upscale=True)
    w, h = img.size
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        left, top = rng.randint(0, w - resolution), rng.randint(0, h - resolution)
    img = img.crop((left, top, left + resolution, top + resolution))
    if random_flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


class DrawingDataset(torch.utils.data.Dataset):
    """A `datasets` split as (pixel_values, input_ids) items; call set_epoch before each epoch."""

    def __init__(
        self, split, tokenizer, resolution: int, center_crop: bool, random_flip: bool, seed: int
    ):
        self.split = split
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.seed, self.epoch = seed, 0
        self.input_ids = tokenizer(
            list(split["text"]),
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids  # tokenized once, not per item per epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, index)
        img = augment(
            self.split[index]["image"], self.resolution, self.center_crop, self.random_flip, rng
        )
        return {"pixel_values": to_tensor(img), "input_ids": self.input_ids[index]}
