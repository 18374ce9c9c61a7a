"""One training run on two machines, as a user launches it on each node, played on this one:
two `accelerate launch` processes meet at a rendezvous on 127.0.0.1 and train one LoRA."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from kshd.training.checkpoints import STATE

from .helpers.events import Child
from .helpers.lora_files import unet_with_and_without
from .helpers.studio import free_port
from .stage_project import accelerate_cmd, accelerate_env, train_metrics

# two training processes on the CPU: nothing else beside them (tests/helpers/parallel.py)
pytestmark = [pytest.mark.slow, pytest.mark.alone]

MACHINES = 2


def node_cmd(machine_rank: int, port: int) -> list[str]:
    """What a user types on node `machine_rank`: the same line on every node but the rank.
    `--num_processes` counts the processes of all machines (accelerate starts
    num_processes // num_machines on each); `--multi_gpu` is torchrun's launcher, which on a
    machine without CUDA runs DDP over gloo on the CPU (without it accelerate starts one
    plain process that never meets the other)."""
    return accelerate_cmd(
        "--multi_gpu",
        f"--num_machines={MACHINES}",
        "--num_processes=2",
        f"--machine_rank={machine_rank}",
        "--main_process_ip=127.0.0.1",
        f"--main_process_port={port}",
    )


def launch_nodes(root: Path, other: Path | None = None) -> list[Child]:
    """Both nodes started at once in `root` (their shared folder), or machine 1 in a folder of
    its own (`other`); each ended, its output read. A node left running when the other fails
    or the time is up is killed with its workers."""
    port, env = free_port(), accelerate_env()
    nodes = []
    try:
        for rank, folder in enumerate([root, other or root]):
            nodes.append(Child(node_cmd(rank, port), folder, env, start_new_session=True))
        for node in nodes:
            node.finish(timeout=600)
        return nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait()


def assert_all_ended_well(nodes: list[Child]) -> None:
    failed = {rank: node for rank, node in enumerate(nodes) if node.proc.returncode != 0}
    assert not failed, "\n".join(
        f"machine {rank} exited {node.proc.returncode}:\n{node.text[-2500:]}"
        for rank, node in failed.items()
    )


def test_two_machines_train_one_run(tiny_models, ready_project, tmp_path):
    """World size 2 across two launchers: the steps are those of 2 processes; the main process
    (rank 0 of machine 0 under the default static rendezvous) alone writes the LoRA, metrics
    and checkpoints; the LoRA loads in diffusers and changes the UNet."""
    root = tmp_path / "p"
    ready_project(root)
    nodes = launch_nodes(root)
    assert_all_ended_well(nodes)
    metrics = train_metrics(root)
    # 8 training drawings, batch 2 on each of 2 processes: 2 steps an epoch, 4 epochs (one
    # process alone would take 16 steps)
    assert metrics["steps"] == 8 and metrics["epochs"] == 4
    written = [node.text.count("__main__: train: {") for node in nodes]
    assert written == [1, 0]  # outputs written once, by machine 0
    assert sorted(p.name for p in (root / "models/checkpoints").iterdir()) == ["checkpoint-6"]
    base, tuned = unet_with_and_without(tiny_models["sd"], root / "models/lora")
    assert torch.isfinite(tuned).all() and (tuned - base).abs().max() > 1e-4


def earlier_checkpoint(root: Path) -> None:
    """A complete checkpoint of another run in `root`'s checkpoints folder, of files enough for
    its removal to take a while."""
    old = root / "models/checkpoints/checkpoint-3"
    for part in range(40):
        (old / f"part-{part}").mkdir(parents=True)
        for i in range(50):
            (old / f"part-{part}" / f"{i}.bin").write_bytes(b"x")
    (old / STATE).write_text(json.dumps({"fingerprint": "another run"}), encoding="utf-8")


@pytest.mark.parametrize(
    "resume, removal",
    [(False, "starting afresh, removing"), (True, "belongs to another run")],
)
def test_an_earlier_runs_checkpoints_are_removed_once(resume, removal, ready_project, tmp_path):
    """The checkpoints folder the processes share (on one machine or several) holding another
    run's checkpoint: one process removes it, started afresh (`train.resume=false`) or not
    (every process at once raced on the same files and crashed); the folder, a DVC output, is
    there after the run."""
    root = tmp_path / "p"
    ready_project(root, [f"train.resume={str(resume).lower()}", "train.checkpointing_steps=100"])
    earlier_checkpoint(root)
    nodes = launch_nodes(root)
    assert_all_ended_well(nodes)
    assert sum(node.text.count(removal) for node in nodes) == 1
    assert train_metrics(root)["steps"] == 8
    assert list((root / "models/checkpoints").iterdir()) == []  # no checkpoint in 8 steps


def test_a_machine_on_another_run_stops_every_process(ready_project, tmp_path):
    """A node whose params differ from the main's (another learning rate: a params.yaml not
    pulled there) trained beside it, its gradients averaged into the main's run; now every
    process stops before the first step, saying what the machines must share."""
    main, other = tmp_path / "main", tmp_path / "other"
    ready_project(main)
    ready_project(other, ["train.learning_rate=2e-2"])
    nodes = launch_nodes(main, other)
    for node in nodes:
        assert node.proc.returncode != 0
        assert "prepared another run than the main process" in node.text, node.text[-3000:]
    assert not (main / "reports/train/metrics.json").exists()
