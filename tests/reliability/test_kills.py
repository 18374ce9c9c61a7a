"""SIGKILL every stage part-way, then run it again: it finishes and equals an uninterrupted run.

A straight run of the five stages, in the test's own process, is the reference. For each kill
point a copy of the project as it stood before that stage runs the stage in a process of its
own, kills itself with SIGKILL at the point (a file opened or renamed, a progress step:
tests/helpers/tripwire.py), is checked for half-written outputs under their final names, and is
run again in a new process. Outputs must equal the straight run's, bit for bit where the stage
is deterministic on CPU (everything compared here is), whatever the process (a set's order
changes from one to the next).
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from ..conftest import ROOT
from ..helpers.events import stop_at
from ..helpers.inprocess import run_stage_here
from ..stage_project import make_project, run_stage, stage_env

pytestmark = pytest.mark.slow
STAGES = ("prepare", "caption", "dataset", "train", "evaluate")
SETTINGS = [
    "train.epochs=4",
    "train.checkpointing_steps=4",
    "train.validation_epochs=0",
    "caption.batch_size=2",
    # the evaluation's mechanics (two seeds a prompt, the checkpoint curve, the sketch section)
    # in fewer sampling steps and sketches: the same files, written the same way
    "evaluate.num_inference_steps=4",
    "evaluate.sketch.drawings=2",
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
    before = {}
    for stage in STAGES:
        before[stage] = base / f"before-{stage}"
        shutil.copytree(root, before[stage], symlinks=True)
        run_stage_here(root, stage)
    return root, before


# Where each stage kills itself (tests/helpers/tripwire.py): the point is an event in the
# child, so the kill lands at the same place on a fast or a slow machine.
KILL_POINTS = {
    # before the third drawing's rename into data/prepared: two done, one written to its temp
    "prepare-mid-folder": ("prepare", "audit:os.rename:*/data/prepared/*.png:3"),
    # right after the first batch of captions reached the cache
    "caption-mid-batch": ("caption", "progress:caption:2"),
    # as the first file inside the dataset's temp folder is opened
    "dataset-while-writing": ("dataset", "audit:open:*/data/.dataset.*.tmp/*"),
    # after step 3, one step before the first checkpoint (checkpointing_steps=4)
    "train-mid-step": ("train", "progress:train:3"),
    # weights written, the state.json that marks the folder complete not yet
    "train-mid-checkpoint-write": (
        "train",
        "audit:open:*/models/checkpoints/.checkpoint-*.tmp/state.json",
    ),
    # before the second base-model image's rename into the cache
    "evaluate-mid-grid": ("evaluate", "audit:os.rename:*/p000-s*.png:2"),
}


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
    stage, when = KILL_POINTS[point]
    root = tmp_path / "killed"
    shutil.copytree(before[stage], root, symlinks=True)
    child = stop_at(root, stage, "SIGKILL", when, stage_env())
    assert child.proc.returncode == -signal.SIGKILL, child.text[-3000:]
    _no_half_written(root, stage, reference)
    run_stage(root, stage)
    for rel in OUTPUTS[stage]:
        assert _files(root, rel) == _files(reference, rel), rel
