"""The device a training ran on, written down: in reports/train/metrics.json (`device`) and in
the train stage's wandb run's config, so that a sweep's experiments (`kshd sweep --gpus`) say
which GPU each had."""

from __future__ import annotations

import torch

from kshd.training.processes import device_record


def test_the_device_record_names_the_gpu_a_process_was_given(monkeypatch):
    """The GPUs it was given (CUDA_VISIBLE_DEVICES, None if unset), the first one's name and how
    many it sees; "cpu" and 0 without CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_record({}) == {"cuda_visible_devices": None, "name": "cpu", "count": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H100 80GB HBM3")
    assert device_record({"CUDA_VISIBLE_DEVICES": "3"}) == {
        "cuda_visible_devices": "3",
        "name": "NVIDIA H100 80GB HBM3",
        "count": 1,
    }


def test_the_train_run_s_wandb_config_holds_the_device_and_keeps_its_id(tmp_path, monkeypatch):
    """The device goes into the run's config after the start: the id, a hash of the config the
    run starts with, stays the one a rerun of the same experiment (on another GPU) resumes."""
    import wandb

    from kshd.config.compose import compose_conf
    from kshd.config.fill import as_plain
    from kshd.experiments.tracking import run_id, scrub, sweep_group
    from kshd.stages import train

    from .conftest import ROOT
    from .helpers.wandb_offline import find_offline_runs

    monkeypatch.setenv("DVC_EXP_NAME", "pinned-exp")
    # faked: a real CUDA_VISIBLE_DEVICES here could hide a real GPU from the rest of the session
    pinned = {"cuda_visible_devices": "1", "name": "NVIDIA H100 80GB HBM3", "count": 1}
    monkeypatch.setattr(train, "device_record", lambda: pinned)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    cfg = compose_conf([f"tracking.dir={tmp_path}", "tracking.mode=offline"], ROOT / "conf")
    run = train.start_tracking(cfg)
    run.finish()
    wandb.teardown()  # the offline file written out (see test_tracking.finish)
    [found] = find_offline_runs(tmp_path / "wandb")
    assert found.config["device"] == pinned
    assert found.config["train"] == as_plain(cfg)["train"]
    expected = run_id("pinned-exp", "train", sweep_group(cfg.tracking), scrub(as_plain(cfg)))
    assert found.run_id == expected
