"""wandb: offline without a key, named after the DVC experiment, secrets never in its config."""

from __future__ import annotations

import pytest

from kshd.tracking import TrackingSettings, resolve_mode, scrub, start_run
from kshd.wandb_offline import find_offline_runs


def test_mode_resolution():
    assert resolve_mode("auto", {}) == "offline"
    assert resolve_mode("auto", {"WANDB_API_KEY": "k"}) == "online"
    assert resolve_mode("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}) == "disabled"
    assert resolve_mode("offline", {"WANDB_API_KEY": "k", "WANDB_MODE": "online"}) == "offline"
    assert resolve_mode("disabled", {}) == "disabled"
    with pytest.raises(ValueError, match="tracking.mode"):
        resolve_mode("sometimes", {})


def test_secrets_are_scrubbed():
    cfg = {"hub": {"token": "hf_x", "repo": "a/b"}, "WANDB_API_KEY": "k", "train": {"epochs": 3}}
    assert scrub(cfg) == {"hub": {"repo": "a/b"}, "train": {"epochs": 3}}


def test_offline_run_is_named_after_the_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brave-exp")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = start_run(
        TrackingSettings(dir=str(tmp_path), group="sweep-1"),
        "train",
        {"train": {"batch_size": 2, "epochs": 3}, "hf_token": "secret"},
    )
    for step in (1, 2):
        run.log({"train/loss": 1.0 / step}, step=step)
    run.finish()
    [found] = find_offline_runs(tmp_path / "wandb")
    assert (found.name, found.group, found.job_type) == ("brave-exp", "sweep-1", "train")
    assert found.config == {"train": {"batch_size": 2, "epochs": 3}}
    assert [h["train/loss"] for h in found.history] == [1.0, 0.5]


def test_disabled_tracking_starts_nothing():
    assert start_run(TrackingSettings(enabled=False), "train", {}) is None
    assert start_run(TrackingSettings(mode="disabled"), "train", {}) is None
