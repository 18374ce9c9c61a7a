"""The `evaluate` config group's schema: how the evaluation draws and scores (conf/evaluate/)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import (
    DEFINES_RESULT,
    require,
)
from kshd.config.values import (
    BEST_BY,
    PREPROCESSORS,
    check_sampler,
)


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
    """`evaluate`: fixed-seed samples and metrics (evaluation.sampling.SampleSettings draws them).

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
