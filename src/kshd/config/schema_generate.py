"""The `generate` config group's schema: the app's request defaults, limits, GUI, ControlNet and
inpainting settings (conf/generate/).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import (
    changes,
    require,
)
from kshd.config.values import (
    CONTROL_MODES,
    DEVICES,
    INPAINT_AREAS,
    PREPROCESSORS,
    PREVIEW_METHODS,
    RESIZE_MODES,
    SAMPLERS,
)


@dataclass(frozen=True)
class GuiSettings:
    """`generate.gui`: where `kshd gui` listens, how many requests may wait, and which LoRAs
    and base models its model bar offers."""

    host: str
    port: int
    queue_size: int
    lora_dirs: tuple[str, ...]
    checkpoints_dir: str | None
    eval_metrics: str | None
    models: tuple[str, ...]


@dataclass(frozen=True)
class ControlSettings:
    """`generate.control`: the ControlNets by control type, and a request's unit defaults."""

    models: dict[str, str]
    type: str
    preprocessor: str
    weight: float
    guidance_start: float
    guidance_end: float
    mode: str

    def validate(self) -> None:
        types = ", ".join(self.models)
        require(self.type in self.models, "generate.control.type", self.type, types)
        require(self.mode in CONTROL_MODES, "generate.control.mode", self.mode,
                ", ".join(CONTROL_MODES))  # fmt: skip
        require(self.preprocessor in PREPROCESSORS, "generate.control.preprocessor",
                self.preprocessor, ", ".join(PREPROCESSORS))  # fmt: skip


@dataclass(frozen=True)
class InpaintSettings:
    """`generate.inpaint`: the inpainting model, and a request's inpainting defaults (A1111's)."""

    model: str | None
    mask_blur: int
    area: str
    padding: int

    def validate(self) -> None:
        require(self.area in INPAINT_AREAS, "generate.inpaint.area", self.area,
                ", ".join(INPAINT_AREAS))  # fmt: skip
        require(self.mask_blur >= 0, "generate.inpaint.mask_blur", self.mask_blur, "a number >= 0")
        require(self.padding >= 0, "generate.inpaint.padding", self.padding, "a number >= 0")


@dataclass(frozen=True)
class PreviewSettings:
    """`generate.preview`: the studio's live preview while drawing (A1111's Live previews)."""

    every: int  # a preview every N steps (A1111's show_progress_every_n_steps); 0: none
    method: str
    taesd: str | None  # a folder of diffusers' AutoencoderTiny (madebyollin/taesd or taesdxl)

    def validate(self) -> None:
        require(self.every >= 0, "generate.preview.every", self.every, "a number >= 0 (0: none)")
        require(self.method in PREVIEW_METHODS, "generate.preview.method", self.method,
                ", ".join(PREVIEW_METHODS))  # fmt: skip
        require(self.method != "taesd" or bool(self.taesd), "generate.preview.method", self.method,
                "generate.preview.taesd set to a folder of AutoencoderTiny for taesd")  # fmt: skip


@dataclass(frozen=True)
class GenerateSettings:
    """The `generate` group: no defaults here, they live in conf/generate/.

    The request fields keep the names of `Request` where they differ only in spelling
    (`guidance_scale` is the request's `cfg_scale`, as A1111 calls CFG)."""

    lora: str | None
    lora_scale: float
    positive_prefix: str
    negative_prefix: str
    negative_prompt: str
    sampler: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int
    batch_count: int
    batch_size: int
    strength: float
    resize_mode: str
    outputs_dir: str
    embeddings: dict[str, str] | None = field(metadata=changes("evaluate"))
    device: str
    attention_slicing: bool
    vae_tiling: bool
    guidance_rescale: float
    limits: Limits
    gui: GuiSettings
    control: ControlSettings
    inpaint: InpaintSettings
    preview: PreviewSettings

    def validate(self) -> None:
        """Named at config load, before the model loads (a request's own check follows)."""
        names = {*SAMPLERS, *(label for label, _, _ in SAMPLERS.values())}
        require(self.sampler in names, "generate.sampler", self.sampler, ", ".join(SAMPLERS))
        require(
            self.resize_mode in RESIZE_MODES,
            "generate.resize_mode",
            self.resize_mode,
            ", ".join(RESIZE_MODES),
        )
        require(self.device in DEVICES, "generate.device", self.device, ", ".join(DEVICES))


@dataclass(frozen=True)
class Limits:
    """`generate.limits`: bounds that keep one request from taking the server down."""

    max_steps: int
    max_side: int
    max_batch_count: int
    max_batch_size: int
    max_prompt_chars: int
    max_upload_pixels: int
    max_upload_mb: int  # the GUI's upload size limit
    max_lora_scale: float
