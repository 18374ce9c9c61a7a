"""The config schema: one typed dataclass per group of conf/, checked whenever config loads.

`kshd.config.fill.settings` fills a group's dataclass and rejects unknown and missing keys;
`check` runs it over every group inside `load_params` / `compose_conf`, so a bad value anywhere
is one line naming the key before any stage loads a model, and the code reads the typed
`ProjectConfig` they return (`cfg.train` is a `TrainSettings`). Defaults live in conf/ only: no
field has one here (tests/test_schema.py), and code gets them with
`kshd.config.compose.defaults(group, **overrides)`. The marks on the fields
(DEFINES_RESULT, `changes(...)`) say which stages' outputs a key changes: `stage_params` derives
each stage's DVC params from them. This module imports no stage's code, so every stage may check
every group at load."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from kshd.config.fill import (
    DEFINES_RESULT,
    STAGES,
    changes,
    field_stages,
    is_variant_base,
    require,
    settings,
)
from kshd.config.schema_caption import CaptionSettings
from kshd.config.schema_evaluate import EvaluateSettings
from kshd.config.schema_generate import GenerateSettings
from kshd.config.schema_model import ModelSettings
from kshd.config.schema_train import TrainSettings
from kshd.config.values import NEAR_DUPLICATE_ACTIONS, TRACKING_MODES


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
    """`output`: the trained adapter's files, checkpoints and reports.

    `lora_dir` holds the adapter's files alone (a DVC folder output: which files a run writes
    depends on the adapter's kind and on EMA); the training's metrics and loss curve go to
    `train_reports_dir`."""

    lora_dir: str
    checkpoints_dir: str
    validation_dir: str
    train_reports_dir: str
    reports_dir: str


@dataclass(frozen=True)
class TaggerSettings:
    """`tagger`: the WD tagger the tag caption kinds interpolate (`caption.model` of
    caption=wd_tagger, `caption.tagger_model` of tags_and_blip2), so that the demo names its
    world's tagger for whichever of them is chosen. The caption keys are what define a result."""

    model: str


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
    near_duplicates: str = field(metadata=DEFINES_RESULT)  # report | drop (one per group)
    near_duplicate_distance: int = field(metadata=DEFINES_RESULT)  # pHash bits, 0..64

    def validate(self) -> None:
        require(self.resolution >= 8, "prepare.resolution", self.resolution, "a number >= 8")
        require(
            self.near_duplicates in NEAR_DUPLICATE_ACTIONS,
            "prepare.near_duplicates",
            self.near_duplicates,
            " or ".join(NEAR_DUPLICATE_ACTIONS),
        )
        require(
            0 <= self.near_duplicate_distance <= 64,
            "prepare.near_duplicate_distance",
            self.near_duplicate_distance,
            "a whole number of pHash bits from 0 to 64",
        )
        require(self.min_side >= 1, "prepare.min_side", self.min_side, "a whole number >= 1")
        require(
            all(0 <= c <= 255 for c in self.background),
            "prepare.background",
            list(self.background),
            "three numbers from 0 to 255 (RGB)",
        )


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
class ClusterSettings:
    """The `cluster` group (conf/cluster/): where `kshd sweep --executor slurm|local` runs one
    submitit job per experiment, and where the jobs push them. No stage reads it."""

    partition: str | None
    gpus_per_job: int
    cpus_per_task: int
    mem_gb: int
    timeout_min: int
    max_running: int  # at most this many jobs at once (a SLURM array's parallelism); 0: all
    sbatch: dict[str, object]  # further sbatch options (account, qos, constraint, ...)
    setup: tuple[str, ...]  # shell lines each job runs first (module load, the venv)
    git_remote: str
    dvc_remote: str | None
    dir: str

    def validate(self) -> None:
        for key in ("gpus_per_job", "max_running"):
            require(getattr(self, key) >= 0, f"cluster.{key}", getattr(self, key), "a number >= 0")
        for key in ("cpus_per_task", "mem_gb", "timeout_min"):
            require(getattr(self, key) >= 1, f"cluster.{key}", getattr(self, key), "a number >= 1")
        require(bool(self.git_remote), "cluster.git_remote", self.git_remote, "a git remote's name")


@dataclass(frozen=True)
class ProjectConfig:
    """The whole composed config (params.yaml): every top-level key of conf/config.yaml."""

    seed: int
    data: DataPaths
    output: OutputPaths
    tiny: TinySettings
    tagger: TaggerSettings
    model: ModelSettings
    # A key that others interpolate comes first, so its own name is reported.
    generate: GenerateSettings
    evaluate: EvaluateSettings
    train: TrainSettings
    prepare: PrepareSettings
    caption: CaptionSettings
    dataset: DatasetSettings
    tracking: TrackingSettings
    cluster: ClusterSettings


def check(tree: Mapping, source: str = "conf/") -> ProjectConfig:
    """A composed tree's every group filled and validated once; the first bad key raises a
    one-line ConfigError."""
    return settings(tree, ProjectConfig, "", source)


def stage_params(stage: str) -> list[str]:
    """The config keys whose change reruns `stage`: its dvc.yaml `params:`, read off the marks.

    Paths are not among them: dvc.yaml interpolates them into deps and outs, whose content DVC
    compares (and records the interpolated values itself)."""
    if stage not in STAGES:
        raise ValueError(f"{stage!r} is not a stage: expected one of {', '.join(STAGES)}")
    keys: list[str] = []
    for key, _, stages in _leaves(ProjectConfig):
        if stage in stages and not any(key.startswith(f"{k}.") for k in keys):
            keys.append(key)
    return keys


def _leaves(cls: type, prefix: str = "", group: str = ""):
    """(dotted key, top-level group, the stages it changes) of every leaf of a schema.

    A variant node (e.g. `train.adapter`, whose keys differ by variant) is one param as a whole
    for the stages its field's marks name (a variant group, such as `caption`, for its own
    stage), while its base's fields still name the other stages they change."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        if is_variant_base(hint):
            own = (f.name,) if not prefix and f.name in STAGES else ()
            yield key, group or f.name, own + field_stages(group or f.name, f)
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{key}.", group or f.name)
        else:
            yield key, group, field_stages(group, f)
