"""Style and prompt metrics in the DreamBooth paper's sense, on CLIP embeddings.

- clip_score: prompt alignment, text-image cosine (the prompt without the trigger phrase);
- style_similarity: mean image cosine between generated images and held-out drawings;
- style_gain: style_similarity with the LoRA minus that of the base model;
- memorization: mean over generated images of the nearest training drawing's cosine (copy -> 1);
- diversity: mean pairwise cosine distance between the seeds of one prompt (identical -> 0).

The metric functions take embeddings, so they are checked without any model; `ClipEncoder` turns
images and texts into embeddings with any CLIP loaded through from_pretrained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from PIL import Image

log = logging.getLogger(__name__)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _unit(a) @ _unit(b).T


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Mean cosine of each image with its own prompt (rows paired)."""
    return float((_unit(image_emb) * _unit(text_emb)).sum(-1).mean())


def style_similarity(generated: torch.Tensor, references: torch.Tensor) -> float:
    """Mean cosine over all (generated, reference) pairs."""
    return float(cosine_matrix(generated, references).mean())


def memorization(generated: torch.Tensor, training: torch.Tensor) -> float:
    """Mean nearest-neighbour cosine to the training drawings: a copy scores 1."""
    return float(cosine_matrix(generated, training).max(dim=1).values.mean())


def diversity(groups: Sequence[torch.Tensor]) -> float:
    """Mean pairwise cosine distance within each group (one prompt, several seeds)."""
    values = []
    for emb in groups:
        n = emb.shape[0]
        if n < 2:
            continue
        sim = cosine_matrix(emb, emb)
        off = sim[~torch.eye(n, dtype=torch.bool)]
        values.append(float((1 - off).mean()))
    return sum(values) / len(values) if values else 0.0


class LazyImages(Sequence):
    """A split's images, decoded only when indexed (a slice decodes its rows alone): embedding
    5,700 training drawings in batches then holds one batch, not the set."""

    def __init__(self, split) -> None:
        self.split = split.select_columns(["image"])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | slice):
        return self.split[key]["image"]


class _ImageEmbedder:
    """A model and its processor by id or folder; images embedded in batches."""

    def __init__(self, model, processor, device: torch.device | str, batch_size: int):
        self.model, self.processor = model.to(device).eval(), processor
        self.device, self.batch_size = device, batch_size

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            px = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            out.append(self._embed(px.to(self.device)).cpu())
        return torch.cat(out)


class ClipEncoder(_ImageEmbedder):
    """CLIP: projected image and text embeddings, for clip_score and the style metrics."""

    def __init__(self, name: str, device: torch.device | str = "cpu", batch_size: int = 16):
        from transformers import CLIPModel, CLIPProcessor

        super().__init__(
            CLIPModel.from_pretrained(name, use_safetensors=True),
            CLIPProcessor.from_pretrained(name),
            device,
            batch_size,
        )

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.processor.tokenizer(
                list(texts[i : i + self.batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            out.append(self.model.get_text_features(**tok).pooler_output.cpu())
        return torch.cat(out)


class DinoEncoder(_ImageEmbedder):
    """A self-supervised ViT (DINO, as the DreamBooth paper): the CLS token as the embedding."""

    def __init__(self, name: str, device: torch.device | str = "cpu", batch_size: int = 16):
        from transformers import AutoImageProcessor, AutoModel

        super().__init__(
            AutoModel.from_pretrained(name, use_safetensors=True),
            AutoImageProcessor.from_pretrained(name),
            device,
            batch_size,
        )

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]
