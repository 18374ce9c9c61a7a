"""BLIP-2 captions with the original project's settings, cleaned, with the trigger phrase added."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from kshd.config.errors import InputError
from kshd.config.schema import CaptionSettings
from kshd.data.caption_cache import CaptionCache
from kshd.fileio import write_text
from kshd.models.loading import device_and_dtype
from kshd.models.source import check_model_source

log = logging.getLogger(__name__)


def clean_caption(raw: str, prompt: str) -> str:
    """Drop the echoed prompt, unprintable characters, repeated words and stray whitespace."""
    text = unicodedata.normalize("NFC", raw).replace("\ufffd", " ")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    text = re.sub(r"\b(\w+)(?:\s+\1\b)+", r"\1", text, flags=re.IGNORECASE)
    return text.strip(" ,.;:")


def with_trigger(caption: str, trigger: str, position: str) -> str:
    """Add the trigger phrase at `position` (conf's `caption.trigger_position`; "end" is the
    original project's `<caption>, <trigger>`)."""
    if not trigger:
        return caption
    if not caption:
        return trigger
    if position == "start":
        return f"{trigger}, {caption}"
    if position == "end":
        return f"{caption}, {trigger}"
    raise ValueError(f"caption.trigger_position must be 'start' or 'end', not {position!r}")


class Captioner:
    """A BLIP-2 model and processor loaded once, captioning batches of images."""

    def __init__(self, settings: CaptionSettings):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        check_model_source(settings.model, "caption.model")
        self.settings = settings
        self.device, self.dtype = device_and_dtype()
        self.processor = Blip2Processor.from_pretrained(settings.model)
        self.processor.tokenizer.padding_side = "left"  # decoder-only text model
        self.model = Blip2ForConditionalGeneration.from_pretrained(
            settings.model, dtype=self.dtype, use_safetensors=True
        ).to(self.device)
        self.model.eval()

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image], seed: int) -> list[str]:
        s = self.settings
        inputs = self.processor(
            images=list(images), text=[s.prompt] * len(images), return_tensors="pt", padding=True
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        torch.manual_seed(seed)
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


def batch_seed(seed: int, keys: Iterable[str]) -> int:
    """A seed per batch from its members, so a batch captions the same way in any run."""
    digest = hashlib.sha256(str(seed).encode())
    for key in keys:
        digest.update(key.encode())
    return int.from_bytes(digest.digest()[:4], "little")


def caption_missing(
    todo: Sequence[tuple[str, Path]], settings: CaptionSettings, cache: CaptionCache
) -> float:
    """Caption (key, image) pairs in batches, saving each batch to the cache; returns images/s.

    BLIP-2 is loaded only when something needs captioning. Batches are formed in the given
    order, so a run resumed after a kill makes the same batches and captions as an unbroken one.
    """
    if not todo:
        return 0.0
    captioner = Captioner(settings)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    for i in range(0, len(todo), settings.batch_size):
        chunk = todo[i : i + settings.batch_size]
        images = [Image.open(path).convert("RGB") for _, path in chunk]
        keys = [key for key, _ in chunk]
        captions = captioner.caption(images, batch_seed(settings.seed, keys))
        cache.add(dict(zip(keys, captions, strict=True)))
        bar.update(len(chunk))
    bar.close()
    rate = len(todo) / max(time.perf_counter() - start, 1e-9)
    log.info("captioned %d images with %s (%.2f images/s)", len(todo), settings.model, rate)
    return rate


def write_info_csv(path: str | Path, rows: Sequence[tuple[str, str]]) -> None:
    """Write `image,text` as UTF-8 CSV with RFC 4180 quoting (commas, quotes, newlines survive)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["image", "text"])
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_info_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read `image,text` rows; a missing column or a short row is an error naming the line."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["image", "text"]:
            raise InputError(
                f"{path}: the first line must be the header `image,text`, got {header}"
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0]:
                raise InputError(f"{path}: row {line_no} has no image or no text: {row}")
            rows.append((row[0], row[1]))
    return rows
