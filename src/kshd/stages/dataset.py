"""DVC stage `dataset`: data/info.csv (+ data/reg_info.csv) -> data/dataset (train / holdout splits,
and `reg`).

Publishing is `kshd push-dataset`, not this stage: a push is a side effect, not an output, and
DVC skips (or restores from its run cache) a stage whose inputs did not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from kshd.config.schema import ProjectConfig
from kshd.data.dataset import save_dataset
from kshd.stages import entry, stage_config


def run(cfg: ProjectConfig) -> dict[str, int]:
    """info.csv -> the on-disk dataset, the holdout chosen by content; the split sizes."""
    data = cfg.data
    return save_dataset(
        data.info_csv,
        data.dataset_dir,
        cfg.dataset.holdout_fraction,
        cfg.caption.trigger_phrase,
        data.reg_info_csv,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run(stage_config(argv, "dataset"))


if __name__ == "__main__":
    entry(main, "dataset")
