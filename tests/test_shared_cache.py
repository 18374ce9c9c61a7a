"""Queued experiments share the workspace's data/cache/ (captions, latents, base-model images).

DVC runs a queued experiment in a temporary copy (.dvc/tmp/exps/...) without the git-ignored
cache and sets DVC_ROOT to the parent repository. Simulated here without DVC's queue (minutes):
four experiments call the train and evaluate stages' `run(cfg)` in-process in such copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kshd.config.compose import shared_path

from .stage_project import noise_drawings, project_cfg

SMALL_EVAL = [
    "evaluate.prompts=['drawn by KSH drawing style, a girl']",
    "evaluate.seeds=[0]",
    "evaluate.lora_scales=[1.0]",
    "evaluate.num_inference_steps=2",
    "evaluate.checkpoints=false",
    "train.max_train_steps=1",
    "train.validation_epochs=0",
]


def test_a_relative_cache_resolves_in_the_parent_repository_of_a_queued_run(tmp_path, monkeypatch):
    parent, copy = tmp_path / "repo", tmp_path / "repo/.dvc/tmp/exps/tmp1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert shared_path("data/cache") == copy / "data/cache"  # a hand run: the working dir
    monkeypatch.setenv("DVC_ROOT", str(parent))
    assert shared_path("data/cache") == parent / "data/cache"
    assert shared_path(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def _inodes(folder: Path) -> dict[str, int]:
    """Each file's inode: an atomic rewrite (temp file + rename) gives a new one."""
    return {str(p.relative_to(folder)): p.stat().st_ino for p in folder.rglob("*") if p.is_file()}


def _experiment(root: Path, name: str, tiny_models: dict, overrides: list[str], monkeypatch):
    """One queued experiment: a copy without data/cache/, its own params, DVC_ROOT = root."""
    from kshd.stages import evaluate, train

    copy = root / ".dvc" / "tmp" / "exps" / name
    model = copy / "models" / "sd"  # a copy per experiment: new place, new times, same content
    shutil.copytree(tiny_models["sd"], model, copy_function=shutil.copy)
    cfg = project_cfg(tiny_models, [*SMALL_EVAL, *overrides, f"model.pretrained={model}"])
    shutil.copytree(root / "data", copy / "data", ignore=shutil.ignore_patterns("cache"))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(root))
    train.run(cfg)
    evaluate.run(cfg)
    assert not (copy / "data" / "cache").exists()
    assert (copy / "reports" / "metrics.json").is_file()


@pytest.mark.slow  # four one-step trainings and evaluations
def test_a_sweep_of_four_encodes_each_drawing_once(tmp_path, tiny_models, monkeypatch):
    from kshd.stages import caption, dataset, prepare

    root = tmp_path / "repo"
    (root / "raw").mkdir(parents=True)
    noise_drawings(root / "raw", 6)
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    cfg = project_cfg(tiny_models, SMALL_EVAL)
    for stage in (prepare, caption, dataset):
        stage.run(cfg)
    cache = root / "data" / "cache"
    grid = [(b, lr) for b in (1, 2) for lr in ("1e-2", "5e-3")]
    for i, (batch, lr) in enumerate(grid):
        overrides = [f"train.batch_size={batch}", f"train.learning_rate={lr}"]
        _experiment(root, f"exp{i}", tiny_models, overrides, monkeypatch)
        if i == 0:
            first = _inodes(cache)
    assert _inodes(cache) == first  # nothing encoded or drawn again, nothing rewritten
    from datasets import load_from_disk

    trained = len(load_from_disk(str(root / "data" / "dataset"))["train"])
    latents = [k for k in first if k.startswith("latents-")]
    base = [k for k in first if k.startswith("eval-base-")]
    assert len(latents) == trained and len(base) == 1, first  # one file per drawing, one image
