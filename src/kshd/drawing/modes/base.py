"""What a drawing mode is (the registry that says which mode a request is: `registry`).

A mode (text to image, image to image, sketch, inpaint: one file each) says, with no model
loaded (class methods, which the app's field checks use too), which requests are its own, checks
its fields, the share of the steps it denoises and its PNG parameters; and, for one engine
(instance methods: it keeps what it loads, e.g. its ControlNets), reads and fits its inputs
before the model is taken, gives the pipeline and its call's own arguments, and what it does
after drawing. The engine draws every mode the same way: batches, seeds, Interrupt and Skip,
the LoRA's strength and saving (to `<outputs_dir>/<mode name>/<date>/`).

A mode whose requests need fields of their own names a `Request` subclass holding them
(`request`; the app builds its tab's requests with it) and claims that class's requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import torch
from PIL import Image

from kshd.config.schema_generate import Limits
from kshd.drawing.request import Request


class Drawing(Protocol):
    """What a mode may use of the engine that draws it."""

    settings: Any  # EngineSettings: the configured ControlNets, inpainting model, outputs
    limits: Limits
    txt2img: Any  # the base model's pipeline: every mode's pipeline shares its weights
    device: torch.device
    dtype: torch.dtype
    lora_name: str | None  # the LoRA merged into the base (None: the base alone)

    def _adapter_into(self) -> Callable | None: ...  # loads the LoRA into a mode's own UNet


class Mode:
    """One drawing mode (see the module's docstring); subclasses set `name`, `claims` and
    `pipeline`."""

    name: ClassVar[str]  # the request's kind: its outputs sub-folder and the app's tab
    request: ClassVar[type[Request]] = Request  # a subclass when its requests have own fields
    # PNG Info: its A1111 `parameters` keys -> (Request field, parse; ValueError or None: unusable)
    param_readers: ClassVar[dict[str, tuple[str, Callable[[str], Any]]]] = {}

    # --- what a request is: no model needed ---

    @classmethod
    def claims(cls, req: Request) -> bool:
        """Whether `req` is this mode's (asked only when no mode registered later claims it).
        Each mode says its own: a subclass of another mode would take all of that one's."""
        raise NotImplementedError(f"{cls.__name__}.claims")

    @classmethod
    def check(cls, req: Request, limits: Limits) -> None:
        """Check and normalise the mode's own fields; RequestError naming the first bad one."""

    @classmethod
    def share(cls, req: Request) -> float:
        """The share of `req.steps` it denoises (image to image: the strength), for the
        queue's estimate (`pace.work`)."""
        return 1.0

    @classmethod
    def params(cls, req: Request, given: Any = None) -> dict[str, object]:
        """Its keys in A1111's `parameters`, in order, placed after "Model family" (a None
        value is left out); `given`: what `inputs` read, None for what the request alone says."""
        return {}

    @classmethod
    def param_keys(cls) -> set[str]:
        """The `parameters` keys it reads back (`read_params`)."""
        return set(cls.param_readers)

    @classmethod
    def read_params(
        cls, params: Mapping[str, str], control_models: Mapping[str, str]
    ) -> tuple[dict[str, object], list[str]]:
        """The Request fields its keys in a `parameters` text give (PNG Info: our files and
        A1111's), and those of its keys it cannot use, to be reported; `control_models`: the
        engine's ControlNets by control type."""
        out: dict[str, object] = {}
        unused: list[str] = []
        for key, (field, parse) in cls.param_readers.items():
            if key not in params:
                continue
            try:
                value = parse(params[key])
            except ValueError:
                value = None
            if value is None:
                unused.append(key)
            else:
                out[field] = value
        return out, unused

    # --- how it is drawn, by one engine ---

    def __init__(self, engine: Drawing):
        self.engine = engine

    def inputs(self, req: Request) -> Any:
        """What it draws from (its pictures read and fitted), before the model is taken;
        RequestError for a bad one."""
        return None

    def unchanged(self, req: Request, given: Any) -> Image.Image | None:
        """The picture as it comes back when no denoising step would run (None: draw)."""
        return None

    def pipeline(self, req: Request, given: Any) -> tuple[Any, dict]:
        """The pipeline to draw with and its call's own arguments (size, pictures, strength);
        the engine adds the prompts, steps, CFG, generators and the step callback."""
        raise NotImplementedError(f"{type(self).__name__}.pipeline")

    def drawing(self, req: Request, pipe: Any) -> AbstractContextManager:
        """Held while its batches are drawn (the sketch's weighting of the ControlNet)."""
        return contextlib.nullcontext()

    def finish(self, images: list[Image.Image], given: Any) -> list[Image.Image]:
        """The drawn images as they are saved (inpainting: the picture's own pixels put back)."""
        return images

    def forget(self) -> None:
        """The LoRA changed: drop what holds the old one (a pipeline with a UNet of its own)."""
