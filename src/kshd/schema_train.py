"""The `train` config group's schema: what to train and how (the training loop reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config import DEFINES_RESULT, defining, require
from kshd.schema_values import (
    MAX_TOKEN_LENGTHS,
    MIXED_PRECISIONS,
    PREDICTION_TYPES,
    SCHEDULERS,
    check_sampler,
)


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config group (conf/train/), filled by `kshd.config.settings`.

    The config path takes every field from conf/. The Python defaults serve library callers
    only: each equals conf/'s value, or is the feature's off value (no validation sampling),
    which tests/test_schema.py checks. DEFINES_RESULT marks the fields in the resume
    fingerprint; the rest change how, not what, is trained."""

    launcher: str = "python"  # the dvc.yaml command runs the stage under it
    resolution: int = field(default=512, metadata=DEFINES_RESULT)
    center_crop: bool = field(default=False, metadata=DEFINES_RESULT)
    random_flip: bool = field(default=True, metadata=DEFINES_RESULT)
    batch_size: int = field(default=1, metadata=DEFINES_RESULT)
    epochs: int = field(default=50, metadata=DEFINES_RESULT)
    max_train_steps: int | None = field(default=None, metadata=DEFINES_RESULT)
    gradient_accumulation_steps: int = field(default=1, metadata=DEFINES_RESULT)
    learning_rate: float = field(default=1e-4, metadata=DEFINES_RESULT)
    lr_scheduler: str = field(default="cosine", metadata=DEFINES_RESULT)
    lr_warmup_steps: int = field(default=0, metadata=DEFINES_RESULT)
    adam_beta1: float = field(default=0.9, metadata=DEFINES_RESULT)
    adam_beta2: float = field(default=0.999, metadata=DEFINES_RESULT)
    adam_weight_decay: float = field(default=0.01, metadata=DEFINES_RESULT)
    adam_epsilon: float = field(default=1e-8, metadata=DEFINES_RESULT)
    use_8bit_adam: bool = field(default=False, metadata=DEFINES_RESULT)
    max_grad_norm: float = field(default=1.0, metadata=DEFINES_RESULT)
    rank: int = field(default=4, metadata=DEFINES_RESULT)
    alpha: float = field(default=4, metadata=DEFINES_RESULT)
    target_modules: tuple[str, ...] = field(
        default=("to_k", "to_q", "to_v", "to_out.0"), metadata=DEFINES_RESULT
    )
    train_text_encoder: bool = field(default=False, metadata=DEFINES_RESULT)
    text_encoder_target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "out_proj"), metadata=DEFINES_RESULT
    )
    mixed_precision: str = field(default="no", metadata=DEFINES_RESULT)
    gradient_checkpointing: bool = False
    allow_tf32: bool = field(default=False, metadata=DEFINES_RESULT)
    snr_gamma: float | None = field(default=None, metadata=DEFINES_RESULT)
    noise_offset: float = field(default=0.0, metadata=DEFINES_RESULT)
    prediction_type: str | None = field(default=None, metadata=DEFINES_RESULT)
    caption_dropout: float = field(default=0.0, metadata=DEFINES_RESULT)
    shuffle_tags: bool = field(default=False, metadata=DEFINES_RESULT)
    cache_latents: bool = field(default=True, metadata=DEFINES_RESULT)
    max_token_length: int = field(default=75, metadata=DEFINES_RESULT)
    buckets: bool = field(default=False, metadata=DEFINES_RESULT)
    bucket_step: int = field(default=64, metadata=DEFINES_RESULT)
    bucket_max_aspect: float = field(default=2.0, metadata=DEFINES_RESULT)
    checkpointing_steps: int = 10000
    checkpoints_total_limit: int | None = None
    resume: bool = True
    seed: int = field(default=5508, metadata=DEFINES_RESULT)
    dataloader_num_workers: int = 0
    validation_prompt: str = ""
    validation_negative_prompt: str = ""
    validation_positive_prefix: str = ""
    validation_negative_prefix: str = ""
    validation_sampler: str = ""
    validation_epochs: int = 0
    validation_seeds: tuple[int, ...] = (0, 1, 2, 3)
    validation_steps: int = 30

    def defining(self) -> dict:
        """The settings that define the result (for the checkpoint fingerprint)."""
        return defining(self)

    def validate(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, "a whole number >= 1")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "a whole number >= 1")
        require(
            self.resolution >= 8 and self.resolution % 8 == 0,
            "train.resolution",
            self.resolution,
            "a multiple of 8 (512 for SD 1.x)",
        )
        require(
            self.lr_scheduler in SCHEDULERS,
            "train.lr_scheduler",
            self.lr_scheduler,
            f"one of {', '.join(SCHEDULERS)}",
        )
        require(
            self.mixed_precision in MIXED_PRECISIONS,
            "train.mixed_precision",
            self.mixed_precision,
            "no, fp16 or bf16",
        )
        require(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "> 0")
        require(self.rank >= 1, "train.rank", self.rank, "a whole number >= 1")
        require(
            self.gradient_accumulation_steps >= 1,
            "train.gradient_accumulation_steps",
            self.gradient_accumulation_steps,
            "a whole number >= 1",
        )
        require(
            self.prediction_type in PREDICTION_TYPES,
            "train.prediction_type",
            self.prediction_type,
            "null (the scheduler's), epsilon or v_prediction",
        )
        require(
            0 <= self.caption_dropout < 1,
            "train.caption_dropout",
            self.caption_dropout,
            "a fraction in [0, 1)",
        )
        self._validate_text()
        require(
            self.checkpointing_steps >= 1,
            "train.checkpointing_steps",
            self.checkpointing_steps,
            "a whole number >= 1",
        )
        require(
            self.max_train_steps is None or self.max_train_steps >= 1,
            "train.max_train_steps",
            self.max_train_steps,
            "null or a whole number >= 1",
        )

    def _validate_text(self) -> None:
        """Captions' length and the validation sampler (drawn as the app draws)."""
        require(
            self.max_token_length in MAX_TOKEN_LENGTHS,
            "train.max_token_length",
            self.max_token_length,
            "75, 150 or 225 (CLIP tokens per caption, in 75-token chunks)",
        )
        check_sampler(self.validation_sampler, "train.validation_sampler")
