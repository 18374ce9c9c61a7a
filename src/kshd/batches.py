"""Training items: resize, crop, flip and normalise drawings; captions as ids or embeddings.

Augmentation is decided by (seed, epoch, index) rather than a global RNG, so an epoch sees the
same crops, flips and caption variants whether a run went straight through or was resumed. The
same plan serves the live path (pixels through the VAE every step, as the reference script) and
the cached path (the VAE's latent distribution computed once), so both train the same way.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass

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


def resized_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The size after resize_short_side(..., upscale=True), without touching pixels."""
    w, h = size
    scale = resolution / min(w, h)
    return (
        (w, h) if min(w, h) == resolution else (max(1, round(w * scale)), max(1, round(h * scale)))
    )


@dataclass(frozen=True)
class Plan:
    left: int
    top: int
    flip: bool


def augment_plan(
    size: tuple[int, int], resolution: int, center_crop: bool, random_flip: bool, rng: random.Random
) -> Plan:
    """As train_text_to_image_lora.py: a square crop of the resized image, maybe flipped."""
    w, h = resized_size(size, resolution)
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        left, top = rng.randint(0, w - resolution), rng.randint(0, h - resolution)
    return Plan(left, top, bool(random_flip and rng.random() < 0.5))


def apply_plan(
    img: Image.Image, resolution: int, plan: Plan, flip: bool | None = None
) -> Image.Image:
    img = resize_short_side(img.convert("RGB"), resolution, upscale=True)
    img = img.crop((plan.left, plan.top, plan.left + resolution, plan.top + resolution))
    if plan.flip if flip is None else flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def caption_variant(text: str, keep: str, dropout: float, shuffle: bool, rng: random.Random) -> str:
    """Caption dropout and tag shuffling (kohya's), keeping the trigger phrase in place."""
    if dropout and rng.random() < dropout:
        return ""
    if not shuffle:
        return text
    tags = [t.strip() for t in text.split(",") if t.strip()]
    kept = [t for t in tags if t == keep]
    rest = [t for t in tags if t != keep]
    rng.shuffle(rest)
    return ", ".join(rest + kept) if text.rstrip().endswith(keep) else ", ".join(kept + rest)


@dataclass(frozen=True)
class ItemOptions:
    resolution: int
    center_crop: bool
    random_flip: bool
    seed: int
    caption_dropout: float = 0.0
    shuffle_tags: bool = False
    keep_tag: str = ""


class DrawingDataset(torch.utils.data.Dataset):
    """A `datasets` split as training items; call set_epoch before each epoch.

    Live mode yields `pixel_values` and `input_ids`. With `latents` (a LatentSource) it yields
    `latent_mean`/`latent_logvar`, and with `texts` (a TextSource) `encoder_hidden_states`.
    """

    def __init__(self, split, tokenizer, opts: ItemOptions, latents=None, texts=None):
        from datasets import Image as ImageFeature

        self.raw = split.cast_column("image", ImageFeature(decode=False))
        self.opts, self.tokenizer, self.latents, self.texts = opts, tokenizer, latents, texts
        self.texts_list = list(split["text"])
        self.names, self.sizes, self.digests = [], [], []
        for row in self.raw["image"]:
            self.names.append(row["path"] or "")
            self.digests.append(hashlib.sha256(row["bytes"]).hexdigest())
            with Image.open(io.BytesIO(row["bytes"])) as img:
                self.sizes.append(img.size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.texts_list)

    def cacheable(self, index: int) -> bool:
        """A random crop of a non-square image differs every epoch: it cannot be cached."""
        w, h = resized_size(self.sizes[index], self.opts.resolution)
        return self.opts.center_crop or w == h

    def image(self, index: int) -> Image.Image:
        return Image.open(io.BytesIO(self.raw[index]["image"]["bytes"]))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        o = self.opts
        rng = item_rng(o.seed, self.epoch, index)
        plan = augment_plan(self.sizes[index], o.resolution, o.center_crop, o.random_flip, rng)
        text = caption_variant(
            self.texts_list[index], o.keep_tag, o.caption_dropout, o.shuffle_tags, rng
        )
        item: dict[str, torch.Tensor] = {"index": torch.tensor(index)}
        if self.latents is None:
            item["pixel_values"] = to_tensor(apply_plan(self.image(index), o.resolution, plan))
        else:
            item["latent_mean"], item["latent_logvar"] = self.latents.get(self, index, plan)
        if self.texts is None:
            item["input_ids"] = self.tokenizer(
                text,
                max_length=self.tokenizer.model_max_length,
                padding="max_length",
                truncation=True,
                return_tensors="pt",
            ).input_ids[0]
        else:
            item["encoder_hidden_states"] = self.texts.get(text)
        return item
