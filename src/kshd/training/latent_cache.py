"""Cached VAE latent distributions and text embeddings, reused across epochs and reruns.

Keys: the image's content, the VAE's (or text encoder's) weights, and the resolution (for texts:
the caption and its chunking). The VAE's distribution (mean and log-variance) is cached, not one
sample, so each step still draws a fresh latent as the reference loop does: the cache changes
speed, not training. With random flip both orientations are cached (a flipped latent is not the
latent of the flipped image). A random crop of a non-square image differs every epoch, so those
items are encoded live, in the main process (DataLoader workers never run the VAE).

With the masked loss (`mask_factor`), a drawing with alpha has its own entry (`-alpha` in its name,
so an entry without the mask is never taken for it) holding its mask on the latent grid, flipped
or not, cut exactly as the latents; a drawing without alpha shares the unmasked entry.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from kshd.fileio import atomic_path
from kshd.prompts.encoding import CHUNK, CaptionChunker
from kshd.training.batches import (
    Plan,
    apply_plan,
    augment_plan,
    caption_ids,
    latent_mask,
    to_tensor,
)

log = logging.getLogger(__name__)


def module_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every weight: a changed base model never reuses stale latents."""
    h = hashlib.blake2b(digest_size=10)
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class LatentSource:
    """The VAE's latent distribution per item: from disk when cacheable, else encoded live."""

    def __init__(self, vae, folder: Path, device: torch.device, mask_factor: int | None = None):
        self.vae, self.folder, self.device = vae, folder, device  # encodes in the VAE's dtype
        self.mask_factor = mask_factor  # train.masked_loss: the VAE's downsampling factor

    def _path(self, ds, index: int) -> Path:
        w, h = ds.targets[index]
        masked = "-alpha" if self.mask_factor and ds.has_alpha[index] else ""
        return self.folder / f"{ds.digests[index][:32]}-{w}x{h}{masked}.safetensors"

    def encode(self, images: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_pixels(torch.stack([to_tensor(i) for i in images]))

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) on the CPU in fp32, as cached; called in the main process only."""
        dist = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        return dist.mean.float().cpu(), dist.logvar.float().cpu()

    def precompute(self, ds) -> dict[str, int]:
        """Encode every cacheable item missing from the cache (both flips when flipping)."""
        o = ds.opts
        todo = [i for i in range(len(ds)) if ds.cacheable(i) and not self._path(ds, i).exists()]
        for i in tqdm(todo, desc="cache latents", unit="img", disable=not todo):
            plan = augment_plan(ds.sizes[i], ds.targets[i], True, False, None)
            flips = [False, True] if o.random_flip else [False]
            img = ds.image(i)
            mean, logvar = self.encode([apply_plan(img, plan, f) for f in flips])
            tensors = {}
            for k, (f, suffix) in enumerate(zip(flips, ("", "_flip"), strict=False)):
                tensors |= {f"mean{suffix}": mean[k], f"logvar{suffix}": logvar[k]}
                if self.mask_factor and ds.has_alpha[i]:
                    tensors[f"mask{suffix}"] = latent_mask(img, plan, self.mask_factor, f)
            with atomic_path(self._path(ds, i)) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        live = sum(not ds.cacheable(i) for i in range(len(ds)))
        stats = {"cached": len(ds) - live, "computed_now": len(todo), "live": live}
        log.info(
            "latents: %(cached)d cached (%(computed_now)d computed now), %(live)d encoded "
            "live (random crops of non-square images; train.center_crop=true caches them)",
            stats,
        )
        return stats

    def get(self, ds, index: int, plan: Plan) -> dict[str, torch.Tensor]:
        """A cached item's distribution and mask, by batch key (uncached crops go through
        `encode_pixels`)."""
        t = load_file(str(self._path(ds, index)))
        suffix = "_flip" if plan.flip else ""
        keys = {"latent_mean": "mean", "latent_logvar": "logvar", "mask": "mask"}
        return {key: t[name + suffix] for key, name in keys.items() if name + suffix in t}


class TextSource:
    """Text-encoder outputs per caption, computed once (frozen text encoders only).

    Captions go through the same CaptionChunkers as live training (train.max_token_length, the
    trigger phrase kept), so cached and live training see the same embeddings; the key holds
    the chunking settings and the clip skip `encode` takes them at (`model.clip_skip`; keys at
    1 are those made before it existed) with the text, the folder the encoders' weights.
    `encode` maps caption ids to the UNet's conditioning (training.components.
    encode_caption_ids): SD 1.x's hidden states, SDXL's both encoders' and the pooled
    `text_embeds`, all cached.
    """

    FILE_KEYS = {"encoder_hidden_states": "hidden", "text_embeds": "pooled"}

    def __init__(
        self,
        encode,
        chunkers: list[CaptionChunker],
        folder: Path,
        device: torch.device,
        clip_skip: int,
    ):
        self.encode, self.chunkers, self.folder, self.device = encode, chunkers, folder, device
        self.clip_skip = clip_skip
        self.memo: dict[str, dict[str, torch.Tensor]] = {}

    def _path(self, text: str) -> Path:
        first = self.chunkers[0]
        skip = f"clip_skip={self.clip_skip}\0" if self.clip_skip != 1 else ""
        key = f"{skip}{first.max_chunks * CHUNK}\0{first.keep}\0{text}"
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """One {file key: tensor} per text, on the CPU in fp32."""
        items = [caption_ids(self.chunkers, text) for text in texts]
        ids = {k: torch.stack([i[k] for i in items]).to(self.device) for k in items[0]}
        out = {self.FILE_KEYS[k]: v.float().cpu() for k, v in self.encode(ids).items()}
        return [{k: v[i] for k, v in out.items()} for i in range(len(texts))]

    def precompute(self, texts: list[str], batch_size: int = 16) -> None:
        unique = sorted(set(texts))
        todo = [t for t in unique if not self._path(t).exists()]
        for i in tqdm(range(0, len(todo), batch_size), desc="cache text", disable=not todo):
            chunk = todo[i : i + batch_size]
            for text, tensors in zip(chunk, self._encode(chunk), strict=True):
                with atomic_path(self._path(text)) as tmp:
                    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))

    def get(self, text: str) -> dict[str, torch.Tensor]:
        """An item's conditioning by batch key. Read per item like the latents: held in memory,
        5,700 captions of 225 tokens would take ~4 GB. Only a variant that was never cached (the
        empty dropout caption) is kept."""
        path = self._path(text)
        if path.exists():
            tensors = load_file(str(path))
        else:
            if text not in self.memo:
                self.memo[text] = self._encode([text])[0]
            tensors = self.memo[text]
        return {key: tensors[name] for key, name in self.FILE_KEYS.items() if name in tensors}
