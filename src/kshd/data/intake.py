"""The prepare step: every raw drawing is either accepted (written as clean RGB PNG) or reported."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from kshd.config.errors import UserError
from kshd.data.images import (
    ImageRejected,
    IntakeRules,
    LoadedImage,
    alpha_path,
    load_image,
    pixel_hash,
    resize_short_side,
    safe_stem,
)
from kshd.data.near_duplicates import Fingerprint, NearDuplicateRules, find_groups, fingerprint
from kshd.fileio import atomic_path

log = logging.getLogger(__name__)


class EmptyInputError(UserError, FileNotFoundError):
    """The raw folder is missing or holds no files: stop before any model loads."""


@dataclass
class PrepareReport:
    """What happened to each input; `inputs == accepted + len(rejected) + duplicates`."""

    inputs: int = 0
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)
    duplicates: int = 0
    duplicate_of: list[dict] = field(default_factory=list)
    animated: list[str] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    near_duplicates: list[dict] | None = None  # None: not checked (the regularization drawings)

    def to_dict(self) -> dict:
        checked = {} if self.near_duplicates is None else {"near_duplicates": self.near_duplicates}
        return checked | {
            "inputs": self.inputs,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "duplicate_of": self.duplicate_of,
            "animated": self.animated,
            "sidecars": self.sidecars,
            "images": self.images,
        }


def visible_files(folder: Path) -> list[Path]:
    """Every file under folder, at any depth, hidden files and folders aside, in walk order."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


_WAYS_IN = (
    "copy your drawings in (cp -r /path/to/drawings/* {raw}/), point data.raw_dir at "
    "the folder that holds them (-S data.raw_dir=/path/to/drawings), or run "
    "+experiment=demo on the bundled samples"
)


def list_inputs(raw_dir: Path) -> tuple[list[Path], list[Path]]:
    """All visible files under raw_dir, split into image candidates and caption sidecars (.txt)."""
    if not raw_dir.is_dir():
        raise EmptyInputError(f"config key `data.raw_dir` = {raw_dir}: the raw drawings folder "
                              f"does not exist; {_WAYS_IN.format(raw=raw_dir)}")  # fmt: skip
    files = visible_files(raw_dir)
    stems = {f.with_suffix("") for f in files if f.suffix.lower() != ".txt"}
    sidecars = [f for f in files if f.suffix.lower() == ".txt" and f.with_suffix("") in stems]
    candidates = [f for f in files if f not in set(sidecars)]
    if not candidates:
        raise EmptyInputError(f"config key `data.raw_dir` = {raw_dir}: no drawings found (the "
                              "folder is empty, hidden files such as .gitkeep aside); "
                              f"{_WAYS_IN.format(raw=raw_dir)}")  # fmt: skip
    return candidates, sidecars


def prepare_folder(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    resolution: int,
    upscale: bool,
    rules: IntakeRules,
    near: NearDuplicateRules | None = None,
) -> PrepareReport:
    """Decode, clean and resize every drawing in raw_dir into out_dir as `<name>-<hash>.png`;
    with `near`, near-duplicates are grouped (and all but one of each dropped if it says so).

    The settings are conf/'s `prepare` group (the stage passes them; no defaults here)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    candidates, sidecars = list_inputs(raw_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(inputs=len(candidates))
    report.sidecars = [s.relative_to(raw_dir).as_posix() for s in sidecars]
    seen: dict[str, str] = {}
    written: dict[str, list[str]] = {}  # accepted drawing -> the outputs it wrote
    prints: dict[str, Fingerprint] = {}
    for path in tqdm(candidates, desc="prepare", unit="img"):
        rel = path.relative_to(raw_dir).as_posix()
        loaded, digest = _accepted(path, rel, rules, report, seen)
        if loaded is None:
            continue
        seen[digest] = rel
        if near is not None:
            prints[rel] = fingerprint(loaded.image)
        name = f"{safe_stem(path.name)}-{digest[:10]}.png"
        target = out_dir / name
        written[rel] = [
            *_write_drawing(loaded, target, resolution, upscale),
            *_copy_sidecar(path, target),
        ]
        report.accepted += 1
        report.images.append({"file": rel, "output": name, "digest": digest})
    if near is not None:
        _near_duplicates(report, prints, near, written)
    _remove_stale(out_dir, {out for outs in written.values() for out in outs})
    log.info(
        "prepare: %d inputs, %d accepted, %d rejected, %d duplicates",
        report.inputs,
        report.accepted,
        len(report.rejected),
        report.duplicates,
    )
    return report


def _accepted(
    path: Path, rel: str, rules: IntakeRules, report: PrepareReport, seen: dict[str, str]
) -> tuple[LoadedImage | None, str]:
    """The drawing decoded and its pixels' digest; None once reported as rejected or as an
    exact duplicate (the same pixels as one accepted before it: `seen`, digest -> file)."""
    try:
        loaded = load_image(path, rules)
    except ImageRejected as exc:
        log.warning("%s: rejected: %s", path, exc.reason)
        report.rejected.append({"file": rel, "reason": exc.reason})
        return None, ""
    digest = pixel_hash(loaded.image)
    if digest in seen:
        report.duplicates += 1
        report.duplicate_of.append({"file": rel, "same_as": seen[digest]})
        return None, digest
    if loaded.animated:
        report.animated.append(rel)
    return loaded, digest


def _near_duplicates(
    report: PrepareReport,
    prints: dict[str, Fingerprint],
    near: NearDuplicateRules,
    written: dict[str, list[str]],
) -> None:
    """Group the accepted drawings' near-duplicates into the report; with `drop`, every copy
    but the kept one leaves the accepted drawings (and `written`) for the rejected."""
    names = list(prints)
    groups = find_groups(names, [prints[n] for n in names], near.distance)
    report.near_duplicates = [g.to_dict() for g in groups]
    copies = {c: g for g in groups for c in g.copies}
    log.info(
        "prepare: %d near-duplicate groups, %d copies (%s; within %d pHash bits)",
        len(groups),
        len(copies),
        "dropped" if near.action == "drop" and copies else "kept",
        near.distance,
    )
    if near.action != "drop":
        return
    report.images = [i for i in report.images if i["file"] not in copies]
    for name, g in copies.items():
        del written[name]
        report.accepted -= 1
        reason = f"near-duplicate of {g.kept} (kept: the most pixels, then the earliest name)"
        report.rejected.append({"file": name, "reason": reason})


REG_SUBDIR = "reg"  # the regularization drawings' folder inside data.prepared_dir


def prepare_reg_folder(
    reg_dir: str | Path,
    prepared_dir: str | Path,
    *,
    resolution: int,
    upscale: bool,
    rules: IntakeRules,
) -> PrepareReport:
    """The regularization drawings (data.reg_dir) prepared as the artist's are, into
    `<prepared_dir>/reg/`, outputs named relative to prepared_dir. A missing or empty folder
    means none: it is optional, unlike raw_dir."""
    reg_dir, out_dir = Path(reg_dir), Path(prepared_dir) / REG_SUBDIR
    if not reg_dir.is_dir() or not visible_files(reg_dir):
        log.info("prepare: no regularization drawings (%s is missing or empty)", reg_dir)
        if out_dir.is_dir():
            shutil.rmtree(out_dir)
        return PrepareReport()
    report = prepare_folder(reg_dir, out_dir, resolution=resolution, upscale=upscale, rules=rules)
    for image in report.images:
        image["output"] = f"{REG_SUBDIR}/{image['output']}"
    return report


def _write_drawing(loaded: LoadedImage, target: Path, resolution: int, upscale: bool) -> list[str]:
    """The drawing as RGB PNG (transparency composited) and, when it has any, its alpha resized
    alike as `<name>.alpha.png` (the masked loss's weights); the names written."""
    outputs = [(target, loaded.image, False)]
    if loaded.alpha is not None:  # named by the RGB's digest: an alpha may change beneath it
        outputs.append((alpha_path(target), loaded.alpha, True))
    for out, img, compare in outputs:
        img = resize_short_side(img, resolution, upscale)
        if not _already_written(out, img, compare):  # a rerun after a kill skips finished ones
            with atomic_path(out) as tmp:
                img.save(tmp, format="PNG")
    return [out.name for out, _, _ in outputs]


def _already_written(target: Path, img, compare_pixels: bool = False) -> bool:
    """Same content gives the same name; the size check catches a changed resolution (and the
    pixels' a changed alpha, whose name is its drawing's)."""
    if not target.exists():
        return False
    from PIL import Image

    with Image.open(target) as done:
        same = done.size == img.size
        return same and (not compare_pixels or done.tobytes() == img.tobytes())


def _copy_sidecar(image: Path, target: Path) -> list[str]:
    """A kohya-style `<name>.txt` beside a drawing travels with it as `<output>.txt`."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return []
    dest, text = target.with_suffix(".txt"), sidecar.read_bytes()
    if not dest.is_file() or dest.read_bytes() != text:
        with atomic_path(dest) as tmp:
            tmp.write_bytes(text)
    return [dest.name]


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Drop outputs (and temp files of a killed run) of drawings no longer in the raw folder."""
    for f in out_dir.iterdir():
        if f.is_file() and f.name not in keep:
            f.unlink()
