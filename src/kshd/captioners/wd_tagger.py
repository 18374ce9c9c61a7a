"""`caption.kind=wd_tagger`: Danbooru tags from a WD v3 tagger (SmilingWolf's ONNX models, as
kohya's finetune/tag_images_by_wd14_tagger.py runs them), in NoobAI-XL's order.

The model is a Hub repo id (its `model.onnx` and `selected_tags.csv` fetched with hf_hub_download,
the two files kohya fetches) or a folder holding those two files. onnxruntime runs it on CUDA
where its CUDA provider is installed, else on the CPU. The caption stage hands the prepared
drawings: `prepare` has composited their transparency onto `prepare.background` (white, kohya's
colour, by default), so kohya's alpha step is already done there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kshd.captioners.base import Captioner, register_captioner
from kshd.captioners.tags import (
    Labels,
    character_names,
    read_labels,
    select_tags,
    with_trigger_in_slot,
)
from kshd.config.schema_caption import TagOptions, WdTaggerCaptionSettings
from kshd.models.source import WAYS_OUT, ModelSourceError, hub_offline

MODEL_FILE, LABEL_FILE = "model.onnx", "selected_tags.csv"


def tagger_file(model: str, filename: str, key: str) -> Path:
    """One of the tagger's two files: from the folder `model`, else from the Hub repo `model`
    (downloaded once into the Hugging Face cache); one line naming `key` when it is neither."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / filename).is_file():
            raise ModelSourceError(
                f"config key `{key}` = {model!r}: the folder has no {filename}; a WD tagger "
                f"folder holds {MODEL_FILE} and {LABEL_FILE} (SmilingWolf's v3 layout)."
            )
        return folder / filename
    try:
        return Path(hf_hub_download(model, filename))
    except HFValidationError:
        raise ModelSourceError(
            f"config key `{key}` = {model!r}: no such folder, nor a Hugging Face repo id "
            "(e.g. SmilingWolf/wd-eva02-large-tagger-v3)."
        ) from None
    except Exception as err:  # offline, not cached, no such repo or file
        why = "HF_HUB_OFFLINE is set" if hub_offline() else type(err).__name__
        raise ModelSourceError(
            f"config key `{key}` = {model!r}: its {filename} is not a local folder's nor in the "
            f"local Hugging Face cache, and {why}. {WAYS_OUT}"
        ) from None


@functools.cache
def tagger_labels(model: str, key: str) -> Labels:
    """The tagger's label file, read once per process."""
    return read_labels(tagger_file(model, LABEL_FILE, key))


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """kohya's preprocess_image (finetune/tag_images_by_wd14_tagger.py) for a `size` px model:
    transparency pasted onto white, RGB->BGR, padded to a white square, resized (cv2's area
    filter down, PIL's Lanczos up, as kohya's library.utils.resize_image), float32 0-255 HWC."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        image = background
    pixels = np.array(image)[:, :, ::-1]  # RGB->BGR
    side = max(pixels.shape[:2])
    pad_x, pad_y = side - pixels.shape[1], side - pixels.shape[0]
    pad_l, pad_t = pad_x // 2, pad_y // 2
    pixels = np.pad(
        pixels,
        ((pad_t, pad_y - pad_t), (pad_l, pad_x - pad_l), (0, 0)),
        mode="constant",
        constant_values=255,
    )
    if side >= size:
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    else:  # kohya's pil_resize: through PIL in RGB order, and back
        rgb = Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1]))
        pixels = np.array(rgb.resize((size, size), resample=Image.Resampling.LANCZOS))[:, :, ::-1]
    return pixels.astype(np.float32)


def tag_trigger(settings: TagOptions, caption: str, model: str, key: str) -> str:
    """A tag kind's trigger placement: the artist slot (which needs the label file's character
    names), else the start or end as for any caption."""
    if settings.trigger_position != "artist":
        return Captioner.place_trigger(settings, caption)
    characters = character_names(tagger_labels(model, key))
    return with_trigger_in_slot(
        caption, settings.trigger_phrase, settings.always_first_tags, characters
    )


@register_captioner(WdTaggerCaptionSettings)
class WdTagger(Captioner):
    """A WD v3 tagger's ONNX session and label file, loaded once, tagging batches of images."""

    model_keys = {"model": LABEL_FILE}

    def __init__(self, settings: WdTaggerCaptionSettings, key: str = "caption.model"):
        """`key` names `settings.model` in errors (tags_and_blip2 calls it caption.tagger_model)."""
        import onnxruntime as ort

        super().__init__(settings)
        model = settings.model
        self.labels = tagger_labels(model, key)
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider",) if p in available]
        self.session = ort.InferenceSession(
            str(tagger_file(model, MODEL_FILE, key)),
            providers=[*providers, "CPUExecutionProvider"],
        )
        model_input = self.session.get_inputs()[0]  # NHWC: (batch, size, size, 3)
        self.input_name, self.size = model_input.name, int(model_input.shape[1])
        # a model exported for a fixed batch runs that many at a time (kohya does the same)
        fixed = model_input.shape[0]
        self.chunk = fixed if isinstance(fixed, int) and fixed > 0 else None
        if len(self.labels.names) != self.session.get_outputs()[0].shape[-1]:
            raise ModelSourceError(
                f"config key `{key}` = {model!r}: {LABEL_FILE} names "
                f"{len(self.labels.names)} tags but the model scores "
                f"{self.session.get_outputs()[0].shape[-1]}: the two files are not one tagger's."
            )

    @classmethod
    def place_trigger(cls, settings: WdTaggerCaptionSettings, caption: str) -> str:
        """The trigger in the artist slot (`caption.trigger_position=artist`): after the count
        and character tags, for the tagger's captions, sidecars and overrides alike."""
        return tag_trigger(settings, caption, settings.model, "caption.model")

    def tags(self, images: Sequence[Image.Image]) -> list[list[str]]:
        """Each image's tags, in NoobAI's order (kshd.captioners.tags)."""
        batch = np.stack([preprocess(img, self.size) for img in images])
        step = self.chunk or len(batch)
        probs = np.concatenate(
            [self.session.run(None, {self.input_name: batch[i : i + step]})[0]
             for i in range(0, len(batch), step)]
        )  # fmt: skip
        return [select_tags(p, self.labels, self.settings) for p in probs]

    def caption(self, images: Sequence[Image.Image], keys: Sequence[str]) -> list[str]:
        return [", ".join(tags) for tags in self.tags(images)]
