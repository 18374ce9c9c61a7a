"""A throwaway project folder (params.yaml + raw drawings) to run stages as DVC would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kshd.config.compose import compose_conf, write_params
from kshd.config.schema import ProjectConfig

from .conftest import QUICK_TRAIN, ROOT, demo_overrides


def project_cfg(
    tiny_models: dict[str, Path], overrides: list[str] = (), quick: bool = True
) -> ProjectConfig:
    """The demo profile on `raw/` with the session's tiny models, tracking off, paths relative
    to the project folder: what make_project writes, for calling a stage's `run(cfg)` there.
    `quick`: its training cut to QUICK_TRAIN (the stages' mechanics, not learning)."""
    return compose_conf(
        [*demo_overrides(tiny_models, "raw"), *(QUICK_TRAIN if quick else []), *overrides],
        conf_dir=ROOT / "conf",
    )


def make_project(
    root: Path, tiny_models: dict[str, Path], overrides: list[str] = (), quick: bool = True
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_params(project_cfg(tiny_models, overrides, quick), root / "params.yaml")
    (root / "raw").mkdir(exist_ok=True)
    return root


def noise_drawings(folder: Path, n: int, start: int = 0, size: int = 64) -> list[Path]:
    paths = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        path = folder / f"drawing_{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def stage_cmd(stage: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"kshd.stages.{stage}", *overrides]


def stage_env() -> dict[str, str]:
    """The environment without DVC's variables: a stage run by hand, not inside `dvc repro`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}


def run_stage(root: Path, stage: str, *overrides: str) -> subprocess.CompletedProcess:
    """The stage in `root` in a process of its own, as a user runs it (a rerun after a kill);
    tests/helpers/inprocess.py runs it in the test's process where the process is not the point."""
    env = stage_env()
    proc = subprocess.run(
        stage_cmd(stage, *overrides), cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def accelerate_env() -> dict[str, str]:
    """The environment of a training process run by hand: no DVC or accelerate settings of the
    runner's, one thread (two each on 2 cores run ~6x slower; both variables: torch takes MKL's
    count over OpenMP's, and a test runner's worker may have set either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "ACCELERATE_"))}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def accelerate_cmd(*launch: str) -> list[str]:
    """`accelerate launch <launch> ... -m kshd.stages.train` as a user types it (fp32, no
    dynamo): `launch` says how many processes and machines."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *launch, "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, "-m", "kshd.stages.train"]


def train_metrics(root: Path) -> dict:
    return json.loads((root / "reports/train/metrics.json").read_text())


def accelerate_train(root: Path, with_output: bool = False):
    """The train stage in `root` under `accelerate launch` with 2 CPU processes; its metrics."""
    cmd = accelerate_cmd("--multi_gpu", "--num_processes", "2", "--num_machines", "1")
    proc = subprocess.run(
        cmd, cwd=root, env=accelerate_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = train_metrics(root)
    return (metrics, proc) if with_output else metrics
