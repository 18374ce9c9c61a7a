"""The config schema: one typed dataclass per group of conf/, checked whenever config loads.

`kshd.config.settings` fills a group's dataclass and rejects unknown and missing keys; `check`
runs it over every group right after `load_params` / `compose_conf`, so a bad value anywhere is
one line naming the key before any stage loads a model. The classes are the settings the code
uses (`TrainSettings`, `CaptionSettings`, `TrackingSettings`, `Limits` are re-exported where
they are used). Defaults live in conf/ only: no field has one here (tests/test_schema.py), and
code gets them with `kshd.config.defaults(group, **overrides)`. The marks on the fields
(DEFINES_RESULT, `changes(...)`) say which stages' outputs a key changes: `stage_params` derives
each stage's DVC params from them. This module imports no stage's code, so every stage may check
every group at load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, field

from omegaconf import DictConfig

from kshd.config import (
    DEFINES_RESULT,
    STAGES,
    changes,
    defining,
    field_stages,
    require,
    settings,
)
from kshd.schema_model import ModelSettings
from kshd.schema_train import TrainSettings
from kshd.schema_values import (
    BEST_BY,
    CONTROL_MODES,
    DEVICES,
    INPAINT_AREAS,
    PREPROCESSORS,
    RESIZE_MODES,
    SAMPLERS,
    TRACKING_MODES,
    TRIGGER_POSITIONS,
    check_sampler,
)


@dataclass(frozen=True)
class DataPaths:
    """`data`: where each stage's inputs and outputs live (dvc.yaml uses them through ${...})."""

    raw_dir: str
    prepared_dir: str
    reports_dir: str
    info_csv: str
    reg_dir: str
    reg_info_csv: str
    dataset_dir: str
    cache_dir: str


@dataclass(frozen=True)
class OutputPaths:
    """`output`: the trained LoRA, checkpoints and reports."""

    lora_dir: str
    checkpoints_dir: str
    validation_dir: str
    reports_dir: str


@dataclass(frozen=True)
class TinySettings:
    """`tiny`: the demo's locally built random-weight models."""

    build: bool
    dir: str
    seed: int


@dataclass(frozen=True)
class DatasetSettings:
    """`dataset`: info.csv -> the on-disk dataset, and where `kshd push-dataset` uploads it."""

    holdout_fraction: float = field(metadata=DEFINES_RESULT)
    hub_repo: str | None
    private: bool

    def validate(self) -> None:
        f = self.holdout_fraction
        require(0 <= f < 1, "dataset.holdout_fraction", f, "a fraction in [0, 1)")


@dataclass(frozen=True)
class PrepareSettings:
    """`prepare`: intake of the raw drawings (data.images.IntakeRules holds the last three; the
    evaluate stage decodes a folder of style references with them too)."""

    resolution: int = field(metadata=DEFINES_RESULT)  # short side after resizing
    upscale: bool = field(metadata=DEFINES_RESULT)
    background: tuple[int, int, int] = field(metadata=DEFINES_RESULT | changes("evaluate"))
    min_side: int = field(metadata=DEFINES_RESULT | changes("evaluate"))
    max_pixels: int = field(metadata=DEFINES_RESULT | changes("evaluate"))

    def validate(self) -> None:
        require(self.resolution >= 8, "prepare.resolution", self.resolution, "a number >= 8")
        require(self.min_side >= 1, "prepare.min_side", self.min_side, "a whole number >= 1")
        require(
            all(0 <= c <= 255 for c in self.background),
            "prepare.background",
            list(self.background),
            "three numbers from 0 to 255 (RGB)",
        )


@dataclass(frozen=True)
class CaptionSettings:
    """The `caption` config group (conf/caption/), filled by `kshd.config.settings`.

    DEFINES_RESULT marks what changes a caption: the cache key. The trigger is added after the
    cache, so it is not in the key, but info.csv and every stage after it carry it."""

    model: str = field(metadata=DEFINES_RESULT)
    prompt: str = field(metadata=DEFINES_RESULT)
    do_sample: bool = field(metadata=DEFINES_RESULT)
    temperature: float = field(metadata=DEFINES_RESULT)
    top_p: float = field(metadata=DEFINES_RESULT)
    repetition_penalty: float = field(metadata=DEFINES_RESULT)
    max_new_tokens: int = field(metadata=DEFINES_RESULT)
    batch_size: int
    seed: int = field(metadata=DEFINES_RESULT)
    trigger_phrase: str = field(metadata=changes("caption", "dataset", "train", "evaluate"))
    trigger_position: str = field(metadata=changes("caption"))
    overrides: str  # a dvc.yaml dep by path: its content, not its name, changes the captions

    def fingerprint(self) -> str:
        """What changes a caption (not batch_size): the cache key's first half."""
        return hashlib.sha256(repr(tuple(defining(self).values())).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Bad values named at config load, before BLIP-2 is loaded."""
        require(
            self.trigger_position in TRIGGER_POSITIONS,
            "caption.trigger_position",
            self.trigger_position,
            "start or end",
        )
        require(self.batch_size >= 1, "caption.batch_size", self.batch_size, "a whole number >= 1")
        require(
            self.max_new_tokens >= 1,
            "caption.max_new_tokens",
            self.max_new_tokens,
            "a whole number >= 1",
        )
        require(0 < self.top_p <= 1, "caption.top_p", self.top_p, "a number in (0, 1]")
        require(self.temperature > 0, "caption.temperature", self.temperature, "a number > 0")


@dataclass(frozen=True)
class TrackingSettings:
    """The `tracking` config group (conf/tracking/): no defaults here, they live in conf/."""

    enabled: bool
    mode: str
    project: str
    entity: str | None
    group: str | None
    dir: str | None
    table_rows: int  # caption table rows (with thumbnails) logged by the caption stage

    def validate(self) -> None:
        """A bad mode is named at config load, not when the first run starts."""
        require(self.mode in TRACKING_MODES, "tracking.mode", self.mode, ", ".join(TRACKING_MODES))
        require(self.table_rows >= 0, "tracking.table_rows", self.table_rows, "a number >= 0")


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


@dataclass(frozen=True)
class SketchEvalSettings:
    """`evaluate.sketch`: sketch to style measured (evaluation.sketch): the ControlNet, how the
    held-out drawings' lines are found, the prompt they are redrawn with, how many."""

    controlnet: str | None  # hub id or folder; null: no sketch section
    preprocessor: str
    weight: float
    prompt: str
    drawings: int

    def validate(self) -> None:
        names = [p for p in PREPROCESSORS if p != "auto"]
        require(self.preprocessor in names, "evaluate.sketch.preprocessor", self.preprocessor,
                ", ".join(names))  # fmt: skip
        require(self.drawings >= 1, "evaluate.sketch.drawings", self.drawings, "a number >= 1")


@dataclass(frozen=True)
class EvaluateSettings:
    """`evaluate`: fixed-seed samples and metrics (evaluation.sampling.EvalSettings draws them).

    Every key changes the report (samples, metrics, the checkpoint curve, the best one)."""

    prompts: tuple[str, ...] = field(metadata=DEFINES_RESULT)
    positive_prefix: str = field(metadata=DEFINES_RESULT)
    negative_prefix: str = field(metadata=DEFINES_RESULT)
    sampler: str = field(metadata=DEFINES_RESULT)
    negative_prompt: str = field(metadata=DEFINES_RESULT)
    seeds: tuple[int, ...] = field(metadata=DEFINES_RESULT)
    num_inference_steps: int = field(metadata=DEFINES_RESULT)
    guidance_scale: float = field(metadata=DEFINES_RESULT)
    resolution: int = field(metadata=DEFINES_RESULT)
    lora_scales: tuple[float, ...] = field(metadata=DEFINES_RESULT)
    clip_model: str | None = field(metadata=DEFINES_RESULT)
    dino_model: str | None = field(metadata=DEFINES_RESULT)
    style_references: str = field(metadata=DEFINES_RESULT)
    checkpoints: bool = field(metadata=DEFINES_RESULT)
    checkpoint_every: int = field(metadata=DEFINES_RESULT)
    checkpoint_last: int | None = field(metadata=DEFINES_RESULT)
    best_by: str = field(metadata=DEFINES_RESULT)
    sketch: SketchEvalSettings = field(metadata=DEFINES_RESULT)

    def validate(self) -> None:
        """Named at config load, not after the whole evaluation ran."""
        check_sampler(self.sampler, "evaluate.sampler")
        for key in ("prompts", "seeds", "lora_scales"):
            require(bool(getattr(self, key)), f"evaluate.{key}", getattr(self, key), "a list")
        for key in ("num_inference_steps", "checkpoint_every"):
            value = getattr(self, key)
            require(value >= 1, f"evaluate.{key}", value, "a whole number >= 1")
        last = self.checkpoint_last
        require(last is None or last >= 1, "evaluate.checkpoint_last", last, "null or >= 1")
        require(self.best_by in BEST_BY, "evaluate.best_by", self.best_by, ", ".join(BEST_BY))


@dataclass(frozen=True)
class ProjectConfig:
    """The whole composed config (params.yaml): every top-level key of conf/config.yaml."""

    seed: int
    data: DataPaths
    output: OutputPaths
    tiny: TinySettings
    model: ModelSettings
    # A key that others interpolate comes first, so its own name is reported.
    generate: GenerateSettings
    evaluate: EvaluateSettings
    train: TrainSettings
    prepare: PrepareSettings
    caption: CaptionSettings
    dataset: DatasetSettings
    tracking: TrackingSettings


def check(cfg: DictConfig, source: str = "conf/") -> ProjectConfig:
    """Every group filled and validated; the first bad key raises a one-line ConfigError."""
    return settings(cfg, ProjectConfig, "", source)


def group(cfg: DictConfig, name: str):
    """One group's settings object, e.g. `group(cfg, "train")` -> TrainSettings."""
    return settings(cfg[name], typing.get_type_hints(ProjectConfig)[name], name)


def stage_params(stage: str) -> list[str]:
    """The config keys whose change reruns `stage`: its dvc.yaml `params:`, read off the marks.

    Paths are not among them: dvc.yaml interpolates them into deps and outs, whose content DVC
    compares (and records the interpolated values itself)."""
    if stage not in STAGES:
        raise ValueError(f"{stage!r} is not a stage: expected one of {', '.join(STAGES)}")
    return [key for key, group, f in _leaves(ProjectConfig) if stage in field_stages(group, f)]


def _leaves(cls: type, prefix: str = "", group: str = ""):
    """(dotted key, top-level group, field) of every leaf of a schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaves(hints[f.name], f"{key}.", group or f.name)
        else:
            yield key, group, f
