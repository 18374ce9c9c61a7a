"""A throwaway git + DVC repository of this checkout, and the environment to run `dvc` in it."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dvc_env() -> dict[str, str]:
    """This environment without DVC's and wandb's variables (a run by hand, not inside DVC),
    offline, with this venv's `dvc` first on PATH and a git identity for the commits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "WANDB_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        HF_HUB_OFFLINE="1",
        WANDB_SILENT="true",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    return env


def run_ok(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with dvc_env(); fails with the output's tail if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def clone_of_this_checkout(dest: Path) -> Path:
    """The files a clean clone has, plus uncommitted code, as a new git repository."""
    listed = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    new = subprocess.run(
        ["git", "ls-files", "-z", "-o", "--exclude-standard", "src", "conf", "tests"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed + new.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        run_ok(cmd, dest)
    return dest


def demo_steps(repo: Path, batch_size: int, epochs: int) -> int:
    """A demo training's steps, from the splits on disk (`data/dataset`): batches of
    `batch_size` per epoch of the training drawings and as many regularization drawings when
    there is a `reg` split (the demo uses no buckets and one process), so data/samples can be
    redrawn without editing the tests."""
    from datasets import load_from_disk

    ds = load_from_disk(str(repo / "data" / "dataset"))
    items = len(ds["train"]) * (2 if "reg" in ds else 1)
    return math.ceil(items / batch_size) * epochs


def link_tiny_models(repo: Path, tiny_models: dict[str, Path]) -> None:
    """The session's tiny models (tests/conftest.py) as the repository's `models/tiny`, then the
    demo's own step that builds them (`make demo` and `kshd sweep --demo` run it first), which
    finds them current and builds nothing: each tiny model is built once for the whole run."""
    from kshd_world.demo import demo_models
    from kshd_world.tiny import TINY_MANIFEST

    shared = tiny_models["sd"].parent
    manifests = sorted(shared.glob(f"*/{TINY_MANIFEST}"))
    assert manifests, shared
    before = [p.read_bytes() for p in manifests]
    tiny = repo / "models" / "tiny"  # a folder, git-ignored as a built one is; a link per model
    tiny.mkdir(parents=True)
    for model in shared.iterdir():
        (tiny / model.name).symlink_to(model, target_is_directory=model.is_dir())
    demo_models(repo)
    assert [p.read_bytes() for p in manifests] == before, "the demo's tiny models are other ones"


def experiments_shown(repo: Path) -> dict[str, dict]:
    """Each experiment of `dvc exp show --json` in `repo` by name: its newest revision's data
    (params and metrics by file)."""
    from kshd.experiments.dvc import exp_show

    return {
        exp["name"]: exp["revs"][0]["data"]
        for baseline in exp_show(repo)
        for exp in baseline.get("experiments") or []
    }
