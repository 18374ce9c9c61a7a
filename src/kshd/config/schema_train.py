"""The `train` config group's schema: what to train and how (the training loop reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import DEFINES_RESULT, changes, defining, require
from kshd.config.schema_adapters import AdapterSettings
from kshd.config.schema_optimizers import OptimizerSettings
from kshd.config.values import (
    COMPILE_BACKENDS,
    COMPILE_MODES,
    MAX_TOKEN_LENGTHS,
    MIXED_PRECISIONS,
    PREDICTION_TYPES,
    SCHEDULERS,
    check_sampler,
)


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config group (conf/train/), filled by `kshd.config.fill.settings`.

    No defaults in code: they live in conf/train/ (`kshd.config.compose.defaults("train", ...)`).
    DEFINES_RESULT marks the fields in the resume fingerprint (and the train stage's DVC
    params); `changes("train")` marks the validation images' settings, which change the
    stage's outputs but not the LoRA; the rest change how, not what, is trained."""

    launcher: str  # the dvc.yaml command runs the stage under it
    resolution: int = field(metadata=DEFINES_RESULT)
    center_crop: bool = field(metadata=DEFINES_RESULT)
    random_flip: bool = field(metadata=DEFINES_RESULT)
    batch_size: int = field(metadata=DEFINES_RESULT)
    epochs: int = field(metadata=DEFINES_RESULT)
    max_train_steps: int | None = field(metadata=DEFINES_RESULT)
    gradient_accumulation_steps: int = field(metadata=DEFINES_RESULT)
    learning_rate: float = field(metadata=DEFINES_RESULT)
    lr_scheduler: str = field(metadata=DEFINES_RESULT)
    lr_warmup_steps: int = field(metadata=DEFINES_RESULT)
    # conf/train/optimizer/: one DVC param as a whole node (its keys differ by kind)
    optimizer: OptimizerSettings = field(metadata=DEFINES_RESULT)
    max_grad_norm: float = field(metadata=DEFINES_RESULT)
    rank: int = field(metadata=DEFINES_RESULT)
    alpha: float = field(metadata=DEFINES_RESULT)
    # conf/train/adapter/: one DVC param as a whole node (its keys differ by kind)
    adapter: AdapterSettings = field(metadata=DEFINES_RESULT)
    train_text_encoder: bool = field(metadata=DEFINES_RESULT)
    mixed_precision: str = field(metadata=DEFINES_RESULT)
    gradient_checkpointing: bool
    # how, not what: a compiled run resumes an eager one's checkpoints and the other way round
    compile: bool
    compile_mode: str
    compile_backend: str
    allow_tf32: bool = field(metadata=DEFINES_RESULT)
    snr_gamma: float | None = field(metadata=DEFINES_RESULT)
    noise_offset: float = field(metadata=DEFINES_RESULT)
    prediction_type: str | None = field(metadata=DEFINES_RESULT)
    # defines the result only with regularization drawings: the train stage puts it in the
    # fingerprint's dataset part then, so runs without them resume as before
    prior_loss_weight: float = field(metadata=changes("train"))
    # kohya's --masked_loss: the loss weighted by the drawings' alpha; in the fingerprint when
    # on (`defining`), so runs without it resume as before
    masked_loss: bool = field(metadata=changes("train"))
    caption_dropout: float = field(metadata=DEFINES_RESULT)
    shuffle_tags: bool = field(metadata=DEFINES_RESULT)
    cache_latents: bool = field(metadata=DEFINES_RESULT)
    max_token_length: int = field(metadata=DEFINES_RESULT)
    buckets: bool = field(metadata=DEFINES_RESULT)
    bucket_step: int = field(metadata=DEFINES_RESULT)
    bucket_max_aspect: float = field(metadata=DEFINES_RESULT)
    checkpointing_steps: int
    checkpoints_total_limit: int | None
    resume: bool
    # the EMA changes its own files, not the raw adapter: in the fingerprint only when on
    # (`defining`), so runs without it resume as before
    ema_decay: float | None = field(metadata=changes("train"))
    ema_every: int = field(metadata=changes("train"))
    ema_warmup: bool = field(metadata=changes("train"))
    seed: int = field(metadata=DEFINES_RESULT)
    dataloader_num_workers: int
    validation_prompt: str = field(metadata=changes("train"))
    validation_negative_prompt: str = field(metadata=changes("train"))
    validation_positive_prefix: str = field(metadata=changes("train"))
    validation_negative_prefix: str = field(metadata=changes("train"))
    validation_sampler: str = field(metadata=changes("train"))
    validation_epochs: int = field(metadata=changes("train"))
    validation_seeds: tuple[int, ...] = field(metadata=changes("train"))
    validation_steps: int = field(metadata=changes("train"))

    # keys that were replaced: setting one names what replaced it (kshd.config.fill.settings);
    # not annotated, so not a field
    RETIRED = {
        "use_8bit_adam": "choose the optimizer with `train/optimizer=adamw8bit` (conf/train/"
        "optimizer/; `train/optimizer=adamw` for plain AdamW)",
        "adam_beta1": "set `train.optimizer.betas=[<beta1>,<beta2>]`",
        "adam_beta2": "set `train.optimizer.betas=[<beta1>,<beta2>]`",
        "adam_weight_decay": "set `train.optimizer.weight_decay`",
        "adam_epsilon": "set `train.optimizer.eps`",
    }

    def defining(self) -> dict:
        """The settings that define the result (for the checkpoint fingerprint); the adapter's
        and the optimizer's parts as their kinds say (`AdapterSettings.fingerprint`,
        `OptimizerSettings.fingerprint`)."""
        marked = defining(self)
        own = {k: v for k, v in marked.items() if k not in ("adapter", "optimizer")}
        ema = {"ema": [self.ema_decay, self.ema_every, self.ema_warmup]} if self.ema_on else {}
        masked = {"masked_loss": True} if self.masked_loss else {}
        return own | self.adapter.fingerprint() | self.optimizer.fingerprint() | ema | masked

    @property
    def ema_on(self) -> bool:
        """Whether an EMA of the adapter's weights is kept (`train.ema_decay` set)."""
        return self.ema_decay is not None

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
            self.prior_loss_weight >= 0,
            "train.prior_loss_weight",
            self.prior_loss_weight,
            "a number >= 0 (1.0 is kohya's; 0 leaves the regularization drawings unlearned)",
        )
        require(
            0 <= self.caption_dropout < 1,
            "train.caption_dropout",
            self.caption_dropout,
            "a fraction in [0, 1)",
        )
        self._validate_text()
        self._validate_ema()
        self._validate_compile()
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

    def _validate_ema(self) -> None:
        require(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "train.ema_decay",
            self.ema_decay,
            "null (no EMA) or a number in (0, 1), e.g. 0.999",
        )
        require(self.ema_every >= 1, "train.ema_every", self.ema_every, "a whole number >= 1")
        require(  # it averages its weights already, and saves the average (x), not the y an
            # EMA would follow after each step: the EMA files would be of other weights
            self.ema_decay is None or self.optimizer.kind != "schedulefree_adamw",
            "train.ema_decay",
            self.ema_decay,
            "null with train/optimizer=schedulefree_adamw (schedule-free AdamW keeps an average "
            "of its weights itself; choose one)",
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

    def _validate_compile(self) -> None:
        require(
            self.compile_mode in COMPILE_MODES,
            "train.compile_mode",
            self.compile_mode,
            f"one of {', '.join(COMPILE_MODES)} (torch.compile's modes)",
        )
        require(
            self.compile_backend in COMPILE_BACKENDS,
            "train.compile_backend",
            self.compile_backend,
            f"one of {', '.join(COMPILE_BACKENDS)} (torch.compile's backends)",
        )
