"""DVC stage `dataset`: data/info.csv -> data/dataset (train / holdout splits).

Publishing is `kshd push-dataset`, not this stage: a push is a side effect, not an output, and
DVC skips (or restores from its run cache) a stage whose inputs did not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from kshd.data.dataset import save_dataset
from kshd.stages import run, stage_config


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "dataset")
    save_dataset(
        cfg.data.info_csv,
        cfg.data.dataset_dir,
        cfg.dataset.holdout_fraction,
        cfg.caption.trigger_phrase,
    )


if __name__ == "__main__":
    run(main, "dataset")
