"""info.csv -> a Hugging Face dataset on disk, with a deterministic holdout split."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

from kshd.config.errors import InputError, UserError
from kshd.data.captioning import read_info_csv
from kshd.data.images import alpha_path
from kshd.fileio import atomic_dir, write_text

log = logging.getLogger(__name__)

TRAIN, HOLDOUT, REG = "train", "holdout", "reg"
SHARD_BYTES = 16 * 2**20  # writing a shard holds several copies of it: 5,700 drawings = ~140


def holdout_mask(digests: Sequence[str], fraction: float) -> list[bool]:
    """Per-item choice by content hash, stable when drawings are added; at least one if asked."""
    if fraction <= 0 or len(digests) < 2:
        return [False] * len(digests)
    scores = [int(d[:15], 16) / 16**15 for d in digests]
    mask = [s < fraction for s in scores]
    if not any(mask):
        mask[scores.index(min(scores))] = True
    if all(mask):
        mask[scores.index(max(scores))] = False
    return mask


def load_rows(info_csv: str | Path, allow_empty: bool = False) -> list[dict]:
    """Rows of info.csv: image path, text, content digest and the alpha beside the image (prepare's
    `<name>.alpha.png`) if any; a missing image stops with its row named. Images are hashed as a
    stream and not kept: 5,700 drawings would be gigabytes."""
    info_csv = Path(info_csv)
    if allow_empty and not info_csv.is_file():
        return []
    rows = []
    for line_no, (image, text) in enumerate(read_info_csv(info_csv), start=2):
        path = info_csv.parent / image
        if not path.is_file():
            raise FileNotFoundError(
                f"{info_csv}: row {line_no}: image {image!r} not found ({path})"
            )
        alpha = alpha_path(path)
        alpha = alpha if alpha.is_file() else None
        rows.append(
            {
                "file": path,
                "name": Path(image).name,
                "text": text,
                "digest": _digest(path),  # of the RGB drawing alone: the holdout is chosen by it
                "alpha": alpha,
                "alpha_digest": _digest(alpha) if alpha else None,
            }
        )
    if not rows and not allow_empty:
        raise InputError(f"{info_csv}: no rows")
    return rows


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def image_bytes(file: Path, alpha: Path | None) -> bytes:
    """The drawing's PNG as prepared; with an alpha, RGBA: its RGB channels exactly the prepared
    (composited) drawing, so dropping the alpha gives back the very pixels the VAE encodes."""
    if alpha is None:
        return file.read_bytes()
    from PIL import Image

    with Image.open(file) as rgb, Image.open(alpha) as a:
        if a.size != rgb.size or rgb.mode != "RGB":
            raise InputError(
                f"{alpha}: the alpha does not fit its drawing {file.name} ({a.size} for "
                f"{rgb.mode} {rgb.size}); run the prepare stage again (`dvc repro prepare`)"
            )
        img = rgb.convert("RGBA")
        img.putalpha(a.convert("L"))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rows_of(rows: list[dict]) -> Iterator[dict]:
    """One row at a time, image bytes read as it is written (the writer flushes in batches)."""
    for r in rows:
        data = image_bytes(r["file"], r["alpha"])
        yield {"image": {"bytes": data, "path": r["name"]}, "text": r["text"]}


def _row_key(r: dict) -> tuple:
    """What a row's content is, for the split's fingerprint (an alpha's digest when it has one)."""
    alpha = (r["alpha_digest"],) if r["alpha_digest"] else ()
    return (r["name"], r["digest"], r["text"], *alpha)


def _split(rows: list[dict], name: str, features, work: Path | None):
    """A split written to Arrow files under `work` as it is generated; in memory without one."""
    from datasets import Dataset

    if not rows:  # the generator builder wants at least one row
        return Dataset.from_dict({"image": [], "text": []}, features=features, split=name)
    key = json.dumps([name, [_row_key(r) for r in rows]])
    with nullcontext(str(work)) if work else tempfile.TemporaryDirectory() as cache:
        return Dataset.from_generator(
            _rows_of,
            features=features,
            cache_dir=cache,
            keep_in_memory=work is None,
            gen_kwargs={"rows": rows},
            split=name,
            fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        )


def build_dataset(
    rows: list[dict], holdout_fraction: float, work: Path | None = None, reg: list[dict] = ()
):
    """A DatasetDict with `train` and `holdout` splits, columns `image` (Image) and `text`, and
    a `reg` split of the regularization drawings when there are any (never held out).

    With `work`, the splits are memory-mapped Arrow files there, so memory does not grow with
    the number of drawings; without it (small sets, tests) they are in memory.
    """
    from datasets import DatasetDict, Features, Image, Value

    features = Features({"image": Image(), "text": Value("string")})
    mask = holdout_mask([r["digest"] for r in rows], holdout_fraction)
    chosen = {
        name: [r for r, m in zip(rows, mask, strict=True) if m == keep]
        for name, keep in ((TRAIN, False), (HOLDOUT, True))
    }
    if reg:
        chosen[REG] = list(reg)
    return DatasetDict({name: _split(rs, name, features, work) for name, rs in chosen.items()})


def dataset_card(counts: dict[str, int], trigger_phrase: str) -> str:
    return (
        "---\nlicense: other\ntask_categories: [text-to-image]\n---\n"
        "# KSH drawing style\n\n"
        "Drawings by KSH with BLIP-2 captions, for LoRA training of Stable Diffusion 1.x. The "
        "`reg` split, when present: regularization drawings in the base model's style, "
        "captioned without the trigger phrase.\n\n"
        f"- trigger phrase: `{trigger_phrase}`\n"
        + "".join(f"- {name}: {n} images\n" for name, n in counts.items())
    )


def save_dataset(
    info_csv: str | Path,
    out_dir: str | Path,
    holdout_fraction: float,
    trigger_phrase: str,
    reg_info_csv: str | Path | None = None,
) -> dict[str, int]:
    """Build and save the dataset atomically; returns the split sizes."""
    rows = load_rows(info_csv)
    reg = load_rows(reg_info_csv, allow_empty=True) if reg_info_csv else []
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent, prefix=".dataset-work.") as work:
        ds = build_dataset(rows, holdout_fraction, Path(work), reg)
        counts = {name: len(split) for name, split in ds.items()}
        _save(ds, counts, out_dir, trigger_phrase)
    log.info("dataset: %s saved to %s", counts, out_dir)
    return counts


def _save(ds, counts: dict[str, int], out_dir: str | Path, trigger_phrase: str) -> None:
    with atomic_dir(out_dir) as tmp:
        # at least one shard per split (an empty split would otherwise get none, and
        # load_from_disk cannot read it back), and shards small enough that writing one does
        # not hold a number of images that grows with the dataset
        shards = {
            name: max(1, math.ceil(split.data.nbytes / SHARD_BYTES)) for name, split in ds.items()
        }
        ds.save_to_disk(str(tmp), num_shards=shards)
        write_text(tmp / "README.md", dataset_card(counts, trigger_phrase))


class HubPushError(UserError, RuntimeError):
    """The Hub push failed; the local dataset is untouched."""


def push_dataset(out_dir: str | Path, repo_id: str, private: bool) -> str:
    """Upload the saved dataset (token from HF_TOKEN, never from config); returns the commit URL.

    Offline (HF_HUB_OFFLINE) it fails before reading anything; on any failure the local
    dataset is left as it was.
    """
    import os

    from datasets import load_from_disk

    from kshd.models.source import hub_offline

    if not repo_id:
        raise HubPushError(
            "config key `dataset.hub_repo` is empty: name the Hub dataset, e.g. "
            "`kshd push-dataset dataset.hub_repo=you/ksh-drawings`"
        )
    if not (Path(out_dir) / "dataset_dict.json").is_file():
        raise HubPushError(f"no dataset at {out_dir}: build it first with `dvc repro dataset`")
    try:
        if hub_offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        commit = load_from_disk(str(out_dir)).push_to_hub(
            repo_id, private=private, token=os.environ.get("HF_TOKEN")
        )
    except Exception as exc:  # network, auth, offline mode: all end the same way for the user
        raise HubPushError(
            f"pushing {out_dir} to the Hub as {repo_id!r} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. The local dataset at {out_dir} is "
            "intact; push later (`kshd push-dataset`) with network and HF_TOKEN."
        ) from exc
    url = getattr(commit, "commit_url", None) or str(commit)
    log.info("dataset %s pushed to the Hub as %s (private=%s): %s", out_dir, repo_id, private, url)
    return url
