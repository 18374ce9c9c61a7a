"""`caption.kind=blip2`: BLIP-2 captions with the original project's settings, cleaned."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch
from PIL import Image

from kshd.captioners.base import Captioner, clean_caption, register_captioner, short_hash
from kshd.config.fill import defining
from kshd.config.schema_caption import Blip2CaptionSettings
from kshd.models.loading import device_and_dtype
from kshd.models.source import check_model_source


def batch_seed(seed: int, keys: Iterable[str]) -> int:
    """A seed per batch from its members, so a batch captions the same way in any run."""
    digest = hashlib.sha256(str(seed).encode())
    for key in keys:
        digest.update(key.encode())
    return int.from_bytes(digest.digest()[:4], "little")


@register_captioner(Blip2CaptionSettings)
class Blip2Captioner(Captioner):
    """A BLIP-2 model and processor loaded once, captioning batches of images."""

    model_keys = {"model": "config.json"}

    def __init__(self, settings: Blip2CaptionSettings):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        super().__init__(settings)
        check_model_source(settings.model, "caption.model")
        self.device, self.dtype = device_and_dtype()
        self.processor = Blip2Processor.from_pretrained(settings.model)
        self.processor.tokenizer.padding_side = "left"  # decoder-only text model
        self.model = Blip2ForConditionalGeneration.from_pretrained(
            settings.model, dtype=self.dtype, use_safetensors=True
        ).to(self.device)
        self.model.eval()

    @classmethod
    def identity(cls, settings: Blip2CaptionSettings) -> str:
        """The marked fields' values alone, hashed as before captioners had kinds, so that the
        BLIP-2 captions cached then keep hitting."""
        return short_hash(tuple(defining(settings).values()))

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        s = self.settings
        inputs = self.processor(
            images=list(images), text=[s.prompt] * len(images), return_tensors="pt", padding=True
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        torch.manual_seed(batch_seed(s.seed, keys))
        out = self.model.generate(
            **inputs,
            do_sample=s.do_sample,
            temperature=s.temperature,
            top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
            max_new_tokens=s.max_new_tokens,
        )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [clean_caption(t, s.prompt) for t in texts]
