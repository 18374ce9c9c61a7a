"""SIGKILL every stage part-way, then run it again: it finishes and equals an uninterrupted run.

A straight run of the five stages is the reference. For each kill point a copy of the project
as it stood before that stage runs the stage, is killed with SIGKILL the moment the point is
reached (a file appearing, a progress line), is checked for half-written outputs under their
final names, and is run again. Outputs must equal the straight run's, bit for bit where the
stage is deterministic on CPU (everything compared here is).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import ROOT
from ..stage_project import make_project, noise_drawings, run_stage, stage_cmd, stage_env

pytestmark = pytest.mark.slow
STAGES = ("prepare", "caption", "dataset", "train", "evaluate")
SETTINGS = [
    "train.epochs=4",
    "train.checkpointing_steps=4",
    "train.validation_epochs=0",
    "caption.batch_size=2",
]
# What each stage must reproduce exactly (captions.json and the train metrics hold timings).
OUTPUTS = {
    "prepare": ["data/prepared", "data/reports/prepare.json"],
    "caption": ["data/info.csv"],
    "dataset": ["data/dataset"],
    "train": [
        "models/lora/pytorch_lora_weights.safetensors",
        "models/lora/ksh_drawing_style.safetensors",
    ],
    "evaluate": ["reports/metrics.json", "reports/checkpoints.csv", "reports/grids"],
}


def _files(root: Path, rel: str) -> dict[str, bytes]:
    path = root / rel
    if path.is_file():
        return {rel: path.read_bytes()}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def straight(tiny_models, tmp_path_factory):
    """The uninterrupted run, and a copy of the project before each stage."""
    base = tmp_path_factory.mktemp("kills")
    root = make_project(base / "straight", tiny_models, SETTINGS)
    shutil.copytree(ROOT / "data" / "samples", root / "raw", dirs_exist_ok=True)
    noise_drawings(root / "raw", 40, size=384)  # enough work for prepare to be caught mid-way
    before = {}
    for stage in STAGES:
        before[stage] = base / f"before-{stage}"
        shutil.copytree(root, before[stage], symlinks=True)
        run_stage(root, stage)
    return root, before


def _count(pattern: str) -> Callable[[Path, str], bool]:
    return lambda root, _log: len(list(root.glob(pattern))) >= 3


def _exists(pattern: str) -> Callable[[Path, str], bool]:
    return lambda root, _log: any(root.glob(pattern))


def _train_step(step: int) -> Callable[[Path, str], bool]:
    return lambda _root, log: any(int(n) >= step for n in re.findall(r"(\d+)/\d+ \[", log))


KILL_POINTS = {
    "prepare-mid-folder": ("prepare", _count("data/prepared/*.png")),
    "caption-mid-batch": ("caption", _exists("data/cache/**/*.jsonl")),
    "dataset-while-writing": ("dataset", _exists("data/.dataset.*.tmp")),
    "train-mid-step": ("train", _train_step(3)),
    "train-mid-checkpoint-write": ("train", _exists("models/checkpoints/.checkpoint-*.tmp")),
    "evaluate-mid-grid": ("evaluate", _exists("data/cache/**/p000-s*.png")),
}


def _kill_when(root: Path, stage: str, reached: Callable[[Path, str], bool], log: Path) -> bool:
    """Run the stage; SIGKILL it as soon as `reached`. False if it finished first."""
    with log.open("w") as out:
        proc = subprocess.Popen(stage_cmd(stage), cwd=root, stdout=out, stderr=out, env=stage_env())
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if reached(root, log.read_text(errors="replace")):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        proc.wait(timeout=60)
    return False


def _no_half_written(root: Path, stage: str, straight_root: Path) -> None:
    """Whatever sits under a final output name is complete: equal to the straight run's file."""
    done = {}
    for rel in OUTPUTS[stage]:
        done |= _files(root, rel)
    reference = {}
    for rel in OUTPUTS[stage]:
        reference |= _files(straight_root, rel)
    torn = [name for name, data in done.items() if reference.get(name) != data]
    torn += [
        ckpt.name
        for ckpt in (root / "models/checkpoints").glob("checkpoint-*")
        if not (ckpt / "state.json").is_file()
    ]
    assert not torn, f"half-written outputs under their final names: {torn}"


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_stage_reruns_to_the_same_outputs(straight, tmp_path, point):
    reference, before = straight
    stage, reached = KILL_POINTS[point]
    root = tmp_path / "killed"
    shutil.copytree(before[stage], root, symlinks=True)
    killed = _kill_when(root, stage, reached, tmp_path / "killed.log")
    assert killed, f"{stage} finished before {point} was seen: make it slower"
    _no_half_written(root, stage, reference)
    run_stage(root, stage)
    for rel in OUTPUTS[stage]:
        assert _files(root, rel) == _files(reference, rel), rel
