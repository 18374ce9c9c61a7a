"""Training items: resize, crop, flip and normalise drawings; captions as ids or embeddings.

Augmentation is decided by (seed, epoch, index) rather than a global RNG, so an epoch sees the
same crops, flips and caption variants whether a run went straight through or was resumed. The
same plan serves the live path (pixels through the VAE every step, as the reference script) and
the cached path (the VAE's latent distribution computed once), so both train the same way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from kshd.prompts.encoding import CaptionChunker
from kshd.training.samplers import epoch_members

if TYPE_CHECKING:
    from kshd.config.schema_train import TrainSettings

log = logging.getLogger(__name__)


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    key = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return random.Random(int.from_bytes(key[:8], "little"))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> CHW float in [-1, 1], the VAE's input range."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def resized_size(size: tuple[int, int], target: int | tuple[int, int]) -> tuple[int, int]:
    """The size after scaling to cover `target` (an int = a square), without touching pixels."""
    tw, th = (target, target) if isinstance(target, int) else target
    w, h = size
    scale = max(tw / w, th / h)
    if scale == 1:
        return w, h
    return max(tw, round(w * scale)), max(th, round(h * scale))


def make_buckets(resolution: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """kohya-style buckets: sides in multiples of `step`, area at most resolution**2."""
    buckets = {(resolution, resolution)}
    w = step
    while w <= resolution * max_aspect:
        h = (resolution * resolution // w) // step * step
        if h >= step and max(w, h) / min(w, h) <= max_aspect:
            buckets.add((w, h))
        w += step
    return sorted(buckets)


def pick_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to the image's (in log scale)."""
    import math

    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


@dataclass(frozen=True)
class Plan:
    left: int
    top: int
    flip: bool
    size: tuple[int, int] = (0, 0)  # the crop: (resolution, resolution) or a bucket


def augment_plan(
    size: tuple[int, int],
    target: int | tuple[int, int],
    center_crop: bool,
    random_flip: bool,
    rng: random.Random | None,
) -> Plan:
    """As train_text_to_image_lora.py: a crop of the resized image, maybe flipped."""
    tw, th = (target, target) if isinstance(target, int) else target
    w, h = resized_size(size, (tw, th))
    if center_crop:
        left, top = (w - tw) // 2, (h - th) // 2
    else:
        left, top = rng.randint(0, w - tw), rng.randint(0, h - th)
    return Plan(left, top, bool(random_flip and rng.random() < 0.5), (tw, th))


def apply_plan(img: Image.Image, plan: Plan, flip: bool | None = None) -> Image.Image:
    """The crop the VAE encodes: RGB (a prepared RGBA drawing's alpha dropped: its RGB is the
    drawing composited as prepare wrote it), resized, cropped and maybe flipped."""
    return _cut(img.convert("RGB"), plan, flip)


def latent_mask(img: Image.Image, plan: Plan, factor: int, flip: bool | None = None):
    """The masked loss's weights [1, h, w] on the latent grid (the crop's sides / `factor`): the
    drawing's alpha cut as `apply_plan` cuts its pixels, area-averaged, in [0, 1]; None for a
    drawing without alpha (it trains unmasked)."""
    if not img.has_transparency_data:
        return None
    alpha = _cut(img.convert("RGBA").getchannel("A"), plan, flip)
    tw, th = plan.size
    grid = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None, None]
    return F.interpolate(grid, size=(th // factor, tw // factor), mode="area")[0]


def _cut(img: Image.Image, plan: Plan, flip: bool | None) -> Image.Image:
    tw, th = plan.size
    new = resized_size(img.size, (tw, th))
    if new != img.size:
        img = img.resize(new, Image.Resampling.LANCZOS)
    img = img.crop((plan.left, plan.top, plan.left + tw, plan.top + th))
    if plan.flip if flip is None else flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def size_condition(size: tuple[int, int], plan: Plan) -> torch.Tensor:
    """SDXL's six size numbers (`add_time_ids`) for a drawing of `size` (w, h) cut by `plan`:
    the original (h, w), the crop's top-left in the resized drawing (mirrored when flipped, so
    it names the same pixels) and the target (h, w), as diffusers' and kohya's SDXL scripts."""
    tw, th = plan.size
    rw, _ = resized_size(size, (tw, th))
    left = rw - plan.left - tw if plan.flip else plan.left
    return torch.tensor([size[1], size[0], plan.top, left, th, tw], dtype=torch.float32)


ID_KEYS = ("input_ids", "input_ids_2")  # one per tokenizer: SD 1.x's CLIP, SDXL's two


def caption_ids(chunkers: list[CaptionChunker], text: str) -> dict[str, torch.Tensor]:
    """A caption's ids ([chunks, 77]) for each text encoder, cut the same way for all."""
    return {key: chunker(text).ids for key, chunker in zip(ID_KEYS, chunkers, strict=False)}


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
    """How a drawing becomes a training item: train.* settings of the same names, no defaults
    of their own (`from_settings`)."""

    resolution: int
    center_crop: bool
    random_flip: bool
    seed: int
    caption_dropout: float
    shuffle_tags: bool
    keep_tag: str  # the tag kept in place (and whole) when shuffling or cutting: the trigger
    buckets: tuple[tuple[int, int], ...]  # aspect-ratio buckets; () = square crops
    max_token_length: int  # caption tokens: 75, 150 or 225 (kohya's), in 75-token chunks

    @classmethod
    def from_settings(cls, train: TrainSettings, keep_tag: str) -> ItemOptions:
        """The train group's fields of the same names; the buckets made when `train.buckets`."""
        buckets = (
            make_buckets(train.resolution, train.bucket_step, train.bucket_max_aspect)
            if train.buckets
            else ()
        )
        own = {"keep_tag": keep_tag, "buckets": tuple(buckets)}
        same = {f.name: getattr(train, f.name) for f in fields(cls) if f.name not in own}
        return cls(**same, **own)


class DrawingDataset(torch.utils.data.Dataset):
    """A `datasets` split (and the `reg` split after it) as training items; call set_epoch
    before each epoch.

    Live mode yields `pixel_values` and `input_ids` ([chunks, 77]; SDXL's second tokenizer's
    as `input_ids_2`). With `latents` (a LatentSource) a cached item yields
    `latent_mean`/`latent_logvar` and one that cannot be cached its `pixel_values`, which
    `encode_live` turns into latents in the main process once the batch arrives: DataLoader
    workers only decode and crop, they never touch the accelerator. With `texts` (a TextSource)
    items yield `encoder_hidden_states` (and SDXL's `text_embeds`). With two tokenizers (SDXL)
    every item has its `time_ids` (size_condition). With `mask_factor` (train.masked_loss: the
    VAE's downsampling factor) a drawing with alpha yields its `mask` (latent_mask), from the
    latent cache when cached. Batch with `collate`.
    """

    def __init__(
        self,
        split,
        tokenizers,
        opts: ItemOptions,
        latents=None,
        texts=None,
        reg=None,
        weight=1.0,
        mask_factor: int | None = None,
    ):
        from datasets import Image as ImageFeature
        from datasets import concatenate_datasets

        # regularization drawings (the `reg` split) follow the artist's: items n_train.. of it
        self.n_train, self.n_reg, self.reg_weight = len(split), len(reg or ()), weight
        if self.n_reg:
            split = concatenate_datasets([split, reg])

        self.raw = split.cast_column("image", ImageFeature(decode=False))
        tokenizers = tokenizers if isinstance(tokenizers, list | tuple) else [tokenizers]
        self.opts, self.latents, self.texts, self.mask_factor = opts, latents, texts, mask_factor
        self.chunkers = [
            CaptionChunker(t, opts.max_token_length, opts.keep_tag) for t in tokenizers
        ]
        self.chunker, self.sdxl = self.chunkers[0], len(tokenizers) > 1
        self.texts_list = list(split["text"])
        self.names, self.sizes, self.digests, self.has_alpha = [], [], [], []
        for row in self.raw["image"]:
            self.names.append(row["path"] or "")
            self.digests.append(hashlib.sha256(row["bytes"]).hexdigest())
            with Image.open(io.BytesIO(row["bytes"])) as img:
                self.sizes.append(img.size)
                self.has_alpha.append(img.has_transparency_data)
        self.targets = [
            pick_bucket(size, list(opts.buckets))
            if opts.buckets
            else (opts.resolution, opts.resolution)
            for size in self.sizes
        ]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.texts_list)

    def cacheable(self, index: int) -> bool:
        """A random crop of a non-square image differs every epoch: it cannot be cached."""
        if self.opts.buckets or self.opts.center_crop:
            return True
        w, h = resized_size(self.sizes[index], self.targets[index])
        return (w, h) == self.targets[index]

    def plan(self, index: int, rng: random.Random | None) -> Plan:
        """Buckets are centre-cropped (cacheable); square crops follow train.center_crop."""
        o = self.opts
        return augment_plan(
            self.sizes[index],
            self.targets[index],
            o.center_crop or bool(o.buckets),
            o.random_flip,
            rng,
        )

    def image(self, index: int) -> Image.Image:
        return Image.open(io.BytesIO(self.raw[index]["image"]["bytes"]))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        o = self.opts
        rng = item_rng(o.seed, self.epoch, index)
        plan = self.plan(index, rng)
        text = caption_variant(
            self.texts_list[index], o.keep_tag, o.caption_dropout, o.shuffle_tags, rng
        )
        item: dict[str, torch.Tensor] = {"index": torch.tensor(index)}
        if self.n_reg:  # the loss's weight: train.prior_loss_weight for a regularization drawing
            item["loss_weight"] = torch.tensor(self.reg_weight if index >= self.n_train else 1.0)
        if self.latents is None or not self.cacheable(index):
            img = self.image(index)
            item["pixel_values"] = to_tensor(apply_plan(img, plan))
            if self.mask_factor:
                item |= _present(mask=latent_mask(img, plan, self.mask_factor))
        else:
            item |= self.latents.get(self, index, plan)
        item |= caption_ids(self.chunkers, text) if self.texts is None else self.texts.get(text)
        if self.sdxl:
            item["time_ids"] = size_condition(self.sizes[index], plan)
        return item

    def encode_live(self, batch: dict) -> dict:
        """In the main process: the VAE's distribution of the batch's uncached crops, merged with
        the cached ones in batch order (cached mode only; live mode encodes in batch_inputs)."""
        if self.latents is None or "pixel_values" not in batch:
            return batch
        mean, logvar = self.latents.encode_pixels(batch.pop("pixel_values"))
        if "latent_mean" not in batch:
            return batch | {"latent_mean": mean, "latent_logvar": logvar}
        live, cached = batch.pop("live_at"), batch.pop("cached_at")
        full_mean = mean.new_empty((len(batch["index"]), *mean.shape[1:]))
        full_logvar = torch.empty_like(full_mean)
        full_mean[live], full_logvar[live] = mean, logvar
        full_mean[cached] = batch["latent_mean"].to(mean)
        full_logvar[cached] = batch["latent_logvar"].to(mean)
        return batch | {"latent_mean": full_mean, "latent_logvar": full_logvar}

    def caption_report(self, examples: int = 3) -> dict:
        """Captions longer than train.max_token_length: counted, a few shown, and logged."""
        long = []
        for name, text in zip(self.names, self.texts_list, strict=True):
            fitted = self.chunker(text)
            if fitted.cut:
                long.append({"image": name, "tokens": fitted.tokens, "cut": fitted.cut})
        report = {
            "max_token_length": self.opts.max_token_length,
            "too_long": len(long),
            "examples": long[:examples],
        }
        if long:
            log.warning(
                "captions: %d of %d are longer than train.max_token_length=%d tokens (e.g. %s); "
                "the end of each caption's body was cut, the trigger phrase kept; set "
                "train.max_token_length to 150 or 225 to keep more",
                len(long),
                len(self.texts_list),
                self.opts.max_token_length,
                ", ".join(f"{e['image']}: {e['tokens']} tokens" for e in long[:examples]),
            )
        return report


def _present(**tensors: torch.Tensor | None) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if v is not None}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items; a batch mixing cached latents and live crops keeps both, with positions. A
    batch where some drawings have a `mask` gives the others ones (unmasked), as kohya's."""
    if any("mask" in item for item in items):
        ones = torch.ones_like(next(item["mask"] for item in items if "mask" in item))
        items = [{"mask": ones} | item for item in items]
    keys = sorted(set().union(*(item.keys() for item in items)))
    batch = {key: torch.stack([item[key] for item in items if key in item]) for key in keys}
    if "pixel_values" in batch and "latent_mean" in batch:
        for key, where in (("pixel_values", "live_at"), ("latent_mean", "cached_at")):
            batch[where] = torch.tensor([i for i, item in enumerate(items) if key in item])
    return batch


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of one bucket each, shuffled by (seed, epoch); resumable with skip_once."""

    def __init__(self, targets: list[tuple[int, int]], batch_size: int, seed: int, n_reg: int = 0):
        self.targets, self.batch_size, self.seed = targets, batch_size, seed
        self.n_reg, self.epoch, self.start = n_reg, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, batches: int) -> None:
        self.start = batches

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        members = epoch_members(len(self.targets) - self.n_reg, self.n_reg, self.epoch)
        order = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
        groups: dict[tuple[int, int], list[int]] = {}
        for i in order:
            groups.setdefault(self.targets[i], []).append(i)
        out = [
            idx[k : k + self.batch_size]
            for _, idx in sorted(groups.items())
            for k in range(0, len(idx), self.batch_size)
        ]
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    def __len__(self) -> int:
        return len(self.batches()) - self.start

    def __iter__(self):
        start, self.start = self.start, 0
        return iter(self.batches()[start:])
