"""The drawings style_similarity is measured against (`evaluate.style_references`).

By default the dataset's held-out split: the artist's own drawings the LoRA never saw. Any other
folder of drawings works too (a curated set of the artist's best, or the demo's reference
drawings of its world): with a handful of held-out drawings, the metric says more about which
characters were held out than about the style.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from kshd.config.errors import InputError
from kshd.data.images import IMAGE_SUFFIXES, ImageRejected, IntakeRules, load_image
from kshd.data.intake import visible_files

log = logging.getLogger(__name__)

KEY = "evaluate.style_references"


class FolderImages(Sequence):
    """A folder's drawings, decoded as the prepare stage decodes them (alpha flattened onto its
    background), one at a time when indexed: embedding many references holds one batch."""

    def __init__(self, paths: Sequence[Path], rules: IntakeRules) -> None:
        self.paths, self.rules = list(paths), rules

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | slice):
        if isinstance(key, slice):
            return [load_image(p, self.rules).image for p in self.paths[key]]
        return load_image(self.paths[key], self.rules).image


def is_dataset(path: Path) -> bool:
    """A `datasets` folder as the dataset stage saves it (a DatasetDict)."""
    return (path / "dataset_dict.json").is_file()


def folder_references(folder: str | Path, rules: IntakeRules) -> FolderImages:
    """Every drawing under `folder` (hidden files aside, as the prepare stage lists its inputs),
    each decoded once now, so a bad folder fails before any model loads (and again when
    embedded: holding them all would grow with the folder); whatever is not a usable drawing is
    named in a warning with its reason, so no file is silently dropped."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(
            f"{KEY}: {root} is not a folder; give a folder of drawings, or the dataset folder "
            "(data.dataset_dir) to use its held-out split"
        )
    files = sorted(visible_files(root))
    accepted = []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            log.warning("%s: %s left out: not an image file", KEY, path)
            continue
        try:
            load_image(path, rules)
        except ImageRejected as err:
            log.warning("%s: %s left out: %s", KEY, path, err.reason)
            continue
        accepted.append(path)
    if not accepted:
        raise InputError(
            f"{KEY}: {root} holds no usable drawing ({len(files)} files); give a folder of "
            "drawings, or the dataset folder (data.dataset_dir) to use its held-out split"
        )
    log.info("%s: %d drawings from %s", KEY, len(accepted), root)
    return FolderImages(accepted, rules)
