"""Pipelines and textual inversions loaded by Hub id, local folder or single file.

The demo's and the tests' tiny random-weight models (built by `kshd_world.tiny`) load through
this same code as Anything V5."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from kshd.models.family import FAMILY_NAMES, SD1, SDXL, is_single_file, model_family

log = logging.getLogger(__name__)


def device_and_dtype(prefer_half: bool = True) -> tuple[torch.device, torch.dtype]:
    """CUDA in fp16, Apple MPS in fp16, else CPU in fp32 (fp16 on CPU is slow and lossy)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16 if prefer_half else torch.float32
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16 if prefer_half else torch.float32
    return torch.device("cpu"), torch.float32


def load_sd_pipeline(
    pretrained: str, revision: str | None, variant: str | None, device: torch.device,
    dtype: torch.dtype, prediction_type: str | None = None, zero_terminal_snr: bool = False,
    single_file_config: str | None = None,
):  # fmt: skip
    """A Stable Diffusion 1.x or SDXL pipeline (the family read from the model) from
    safetensors weights, a folder, Hub id or single file; no safety checker, quiet; its
    scheduler on the model's own schedule (`model.prediction_type`, `model.zero_terminal_snr`:
    the samplers are built from it)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from kshd.models.single_file import check_single_file, load_pipeline

    kw = {"revision": revision, "variant": variant, "dtype": dtype, "use_safetensors": True}
    if is_single_file(pretrained):
        info = check_single_file(pretrained, single_file_config, prediction_type,
                                 zero_terminal_snr)  # fmt: skip
        pipe = load_pipeline(pretrained, single_file_config, info.family, dtype)
    elif model_family(pretrained, revision) == SDXL:
        pipe = StableDiffusionXLPipeline.from_pretrained(pretrained, **kw)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            pretrained, safety_checker=None, requires_safety_checker=False, **kw
        )
    schedule = {"prediction_type": prediction_type} if prediction_type else {}
    if zero_terminal_snr:  # its last step starts from pure noise (Lin et al. 2023)
        schedule |= {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    if schedule:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **schedule)
    if device.type != "cpu":  # already there; .to() would only warn about dtypes
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_embeddings(pipe, embeddings: Mapping[str, str]) -> tuple[dict[str, int], list[str]]:
    """The textual inversions `{name: .safetensors file}` into the pipeline's tokenizer and text
    encoder (SDXL's: a file's `clip_l` and `clip_g` vectors into the two), as the app and the
    evaluation both draw with them: ({name: vectors}, a note for each name not loaded, which
    then reads as plain text: its file missing, or made for the other family)."""
    vectors, notes = {}, []
    base = SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD1
    for name, file in embeddings.items():
        if not Path(file).is_file():
            notes.append(
                f"textual-inversion embedding {name!r}: {file} not found, so {name!r} is read "
                "as plain text; put the .safetensors file there to use it"
            )
            continue
        if (family := embedding_family(file)) != base:
            notes.append(
                f"textual-inversion embedding {name!r}: {file} is an {FAMILY_NAMES[family]} "
                f"embedding and the base is {FAMILY_NAMES[base]}, so {name!r} is read as plain "
                f"text; use an {FAMILY_NAMES[base]} one"
            )
            continue
        before = len(pipe.tokenizer)
        if base == SDXL:
            _load_sdxl_embedding(pipe, name, file)
        else:
            pipe.load_textual_inversion(file, token=name, use_safetensors=True)
        vectors[name] = len(pipe.tokenizer) - before
        log.info("embedding %s: %d vectors from %s", name, vectors[name], file)
    return vectors, notes


def _load_sdxl_embedding(pipe, name: str, file: str) -> None:
    """An SDXL embedding's `clip_l` vectors into the first encoder, `clip_g` into the second,
    under the same token (diffusers' documented way)."""
    from safetensors.torch import load_file

    state = load_file(file)
    pairs = (("clip_l", pipe.text_encoder, pipe.tokenizer),
             ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2))  # fmt: skip
    for key, encoder, tokenizer in pairs:
        pipe.load_textual_inversion(state[key], token=name, text_encoder=encoder,
                                    tokenizer=tokenizer)  # fmt: skip


def embedding_family(file: str | Path) -> str:
    """SDXL's embeddings hold one tensor per text encoder (`clip_l`, `clip_g`); SD 1.x's one."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return SDXL if {"clip_l", "clip_g"} <= set(f.keys()) else SD1


def pipeline_from_parts(
    vae, text_encoder, tokenizer, unet, scheduler, text_encoder_2=None, tokenizer_2=None
):  # fmt: skip
    """An SD 1.x pipeline (SDXL's with a second text encoder) around parts already in memory
    (being trained, or just built): no safety checker, quiet, nothing copied."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                 scheduler=scheduler)  # fmt: skip
    if text_encoder_2 is not None:
        pipe = StableDiffusionXLPipeline(
            **parts, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
