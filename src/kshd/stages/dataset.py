"""DVC stage `dataset`: data/info.csv -> data/dataset (train / holdout splits)."""

from __future__ import annotations

from collections.abc import Sequence

from kshd.dataset import push_dataset, save_dataset
from kshd.stages import run, stage_config


def main(argv: Sequence[str] | None = None) -> None:
    cfg = stage_config(argv, "dataset")
    d = cfg.dataset
    save_dataset(
        cfg.data.info_csv, cfg.data.dataset_dir, d.holdout_fraction, cfg.caption.trigger_phrase
    )
    if d.push_to_hub:
        push_dataset(cfg.data.dataset_dir, d.hub_repo, d.private)


if __name__ == "__main__":
    run(main, "dataset")
