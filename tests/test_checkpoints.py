"""Checkpoints: exact round trip of optimizer and RNG, atomic folders, retention."""

from __future__ import annotations

import random

import numpy as np
import torch

from kshd.training.checkpoints import (
    Progress,
    complete_checkpoints,
    find_resumable,
    load_checkpoint,
    prune,
    save_checkpoint,
    start_disagreement,
    starting_checkpoint,
)


def _optimizer_after_steps(n: int) -> tuple[torch.nn.Parameter, torch.optim.AdamW]:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.99))
    for _ in range(n):
        p.grad = torch.randn(4, 3)
        opt.step()
    return p, opt


def _save(root, step, fp="run-a", limit=None):
    p, opt = _optimizer_after_steps(step)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    return save_checkpoint(
        root,
        fp,
        Progress(step=step, epoch=1, batch_in_epoch=3, history=[{"step": step, "loss": 0.5}]),
        {"unet.w": p.detach().clone()},
        opt.state_dict(),
        sched.state_dict(),
        limit,
    )


def test_round_trip_restores_optimizer_scheduler_and_every_rng(tmp_path):
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    path = _save(tmp_path, 3)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(999)
    random.seed(999)
    np.random.seed(999)
    loaded = load_checkpoint(path)
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == (
        expected[0].tolist(),
        expected[1],
        expected[2],
    )
    p, opt = _optimizer_after_steps(3)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4, 3))], lr=0.1)
    fresh.load_state_dict(loaded.optimizer_state)
    a, b = fresh.state_dict(), opt.state_dict()
    assert all(torch.equal(a["state"][0][k], b["state"][0][k]) for k in b["state"][0])
    assert tuple(a["param_groups"][0]["betas"]) == (0.9, 0.99)
    assert loaded.progress == Progress(
        step=3, epoch=1, batch_in_epoch=3, history=[{"step": 3, "loss": 0.5}]
    )
    assert torch.equal(loaded.lora["unet.w"], p.detach())
    assert loaded.scheduler_state["last_epoch"] == 0


def test_half_written_checkpoints_are_never_picked_up(tmp_path):
    _save(tmp_path, 2)
    (tmp_path / ".checkpoint-4.tmp").mkdir()  # killed while writing
    (tmp_path / "checkpoint-6").mkdir()  # no state.json: incomplete
    (tmp_path / "checkpoint-6" / "lora.safetensors").write_bytes(b"partial")
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2]
    assert find_resumable(tmp_path, "run-a").name == "checkpoint-2"
    prune(tmp_path, None)
    assert not (tmp_path / ".checkpoint-4.tmp").exists()


def test_retention_keeps_the_newest_complete_ones(tmp_path):
    for step in (2, 4, 6, 8):
        _save(tmp_path, step, limit=2)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [6, 8]


def test_another_runs_checkpoints_are_not_resumed(tmp_path):
    _save(tmp_path, 2, fp="batch-size-1")
    _save(tmp_path, 4, fp="batch-size-1")
    assert find_resumable(tmp_path, "batch-size-2") is None
    assert complete_checkpoints(tmp_path) == []

    _save(tmp_path, 6, fp="batch-size-1")
    assert find_resumable(tmp_path, "batch-size-2", remove=False) is None  # not the main process
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [6]


def test_starting_afresh_leaves_the_folder_empty(tmp_path):
    """`train.resume=false`: no checkpoint resumed, the folder (a DVC output) still there."""
    from accelerate import PartialState

    _save(tmp_path, 2)
    assert starting_checkpoint(tmp_path, "run-a", True, PartialState()).name == "checkpoint-2"
    assert starting_checkpoint(tmp_path, "run-a", False, PartialState()) is None
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


def test_processes_that_would_start_apart_are_named(tmp_path):
    """Every process must start the main's run at the main's checkpoint: a machine with other
    params or data, or without the shared checkpoints, would train beside it on its own."""
    same = [("fp", "checkpoint-6"), ("fp", "checkpoint-6")]
    assert start_disagreement(same, tmp_path) is None
    other_run = start_disagreement([("fp", None), ("fp", None), ("other", None)], tmp_path)
    assert other_run.startswith("processes [2] prepared another run than the main process")
    no_checkpoint = start_disagreement([("fp", "checkpoint-6"), ("fp", None)], tmp_path)
    assert no_checkpoint == (
        "processes [1] would start from step 0, the main process from checkpoint-6: every "
        f"machine needs the main process's {tmp_path} (a shared folder)"
    )
