"""wandb: offline without a key, named after the DVC experiment, secrets never in its config."""

from __future__ import annotations

import pytest

from kshd.config.compose import compose_conf, defaults
from kshd.config.errors import ConfigError
from kshd.experiments.tracking import (
    REDACTED,
    TrackingSettings,
    resolve_mode,
    run_id,
    scrub,
    start_run,
    sweep_group,
)

from .conftest import ROOT
from .helpers.wandb_offline import find_offline_runs


def tracking(**changes) -> TrackingSettings:
    """conf/'s tracking group (the schema has no defaults of its own) with `changes`, checked
    as config keys."""
    return defaults("tracking", ROOT / "conf", **changes)


def finish(run) -> None:
    """Finish the run and wait for wandb's service to write it out: `run.finish()` alone can
    return before the offline `.wandb` file holds the run (read back empty in ~1 of 2 runs on
    two loaded cores; 0 of 5 with the teardown)."""
    import wandb

    run.finish()
    wandb.teardown()


def test_conf_tracks_offline_without_a_key_and_a_bad_mode_fails_at_load():
    assert (tracking().enabled, tracking().mode, tracking().project) == (
        True,
        "auto",
        "ksh-drawing-ai",
    )
    with pytest.raises(ConfigError, match=r"`tracking\.mode` = 'bogus'.*offline"):
        compose_conf(["tracking.mode=bogus"], conf_dir=ROOT / "conf")


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
    assert scrub(cfg, {}) == {"hub": {"repo": "a/b"}, "train": {"epochs": 3}}


def test_scrub_keeps_settings_that_only_mention_tokens_and_redacts_secret_values():
    env = {"HF_TOKEN": "hf_abcdef123", "WANDB_API_KEY": "k" * 40}
    cfg = {
        "caption": {"max_new_tokens": 40, "model": "x"},
        "hub_auth": "u:p",
        "model": {"pretrained": "https://user:hf_abcdef123@host/m", "list": ["a", "hf_abcdef123"]},
    }
    assert scrub(cfg, env) == {
        "caption": {"max_new_tokens": 40, "model": "x"},
        "model": {"pretrained": REDACTED, "list": ["a", REDACTED]},
    }


def test_sweep_group_from_config_env_or_the_experiments_baseline():
    base = {"DVC_EXP_BASELINE_REV": "0123456789abcdef"}
    assert sweep_group(tracking(group="mine"), base) == "mine"
    assert sweep_group(tracking(), base | {"WANDB_RUN_GROUP": "env"}) == "env"
    assert sweep_group(tracking(), base) == "baseline-0123456"
    assert sweep_group(tracking(), {}) is None


def test_run_id_is_stable_per_experiment_stage_and_params():
    cfg = {"train": {"epochs": 3}}
    first = run_id("brave-exp", "train", "g", cfg)
    assert first == run_id("brave-exp", "train", "g", {"train": {"epochs": 3}})
    assert first.startswith("brave-exp-train-")
    others = {
        run_id("brave-exp", "evaluate", "g", cfg),
        run_id("other-exp", "train", "g", cfg),
        run_id("brave-exp", "train", "g", {"train": {"epochs": 4}}),
    }
    assert first not in others and len(others) == 3
    assert run_id(None, "train", "g", cfg) is None


def test_offline_run_is_named_after_the_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brave-exp")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = start_run(
        tracking(dir=str(tmp_path), group="sweep-1"),
        "train",
        {"train": {"batch_size": 2, "epochs": 3}, "hf_token": "secret"},
    )
    for step in (1, 2):
        run.log({"train/loss": 1.0 / step}, step=step)
    finish(run)
    [found] = find_offline_runs(tmp_path / "wandb")
    assert (found.name, found.group, found.job_type) == ("brave-exp", "sweep-1", "train")
    assert found.config == {"train": {"batch_size": 2, "epochs": 3}}
    assert [h["train/loss"] for h in found.history] == [1.0, 0.5]


def test_a_queued_experiment_logs_into_the_project_not_its_temporary_copy(tmp_path, monkeypatch):
    project, copy = tmp_path / "project", tmp_path / "project/.dvc/tmp/exps/tmp1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.setenv("DVC_EXP_NAME", "queued-exp")
    monkeypatch.setenv("WANDB_MODE", "offline")
    finish(start_run(tracking(), "train", {"train": {"epochs": 1}}))
    [found] = find_offline_runs(project / "wandb")
    assert found.name == "queued-exp" and not (copy / "wandb").exists()


def test_disabled_tracking_starts_nothing():
    assert start_run(tracking(enabled=False), "train", {}) is None
    assert start_run(tracking(mode="disabled"), "train", {}) is None


def test_training_s_validation_images_reach_the_offline_wandb_run(
    tiny_models, sample_split, tmp_path, monkeypatch
):
    """The train stage's validator, called by the training loop: each validated epoch's images
    are an image list in the run's history (one per validation seed) and PNG files in the run's
    media, the same pictures as the epoch's grid in reports/validation."""
    import numpy as np
    from PIL import Image

    from kshd.stages.train import validator
    from kshd.training.components import load_components
    from kshd.training.loop import train_lora

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    s = defaults(
        "train", resolution=64, batch_size=5, epochs=2, validation_epochs=1, seed=7,
        validation_seeds=[0, 1], validation_steps=2, validation_prompt="an anime girl",
    )  # fmt: skip
    run = start_run(tracking(dir=str(tmp_path)), "train", {"train": {"epochs": 2}})
    validate = validator(str(tmp_path / "validation"), s, run)
    train_lora(load_components(str(tiny_models["sd"])), sample_split, s, validate=validate)
    finish(run)
    [found] = find_offline_runs(tmp_path / "wandb")
    key = "train/validation/"  # wandb's history flattens the image list's fields
    logged = [{k[len(key) :]: v for k, v in h.items() if k.startswith(key)} for h in found.history]
    logged = [v for v in logged if v]
    assert [(v["_type"], v["count"]) for v in logged] == [("images/separated", 2)] * 2
    assert [v["captions"] for v in logged] == [
        [f"epoch {e}, seed {seed}" for seed in (0, 1)] for e in (1, 2)
    ]
    grids = sorted((tmp_path / "validation").glob("epoch-*.png"))
    assert [g.name for g in grids] == ["epoch-0001.png", "epoch-0002.png"]
    for v, grid_file in zip(logged, grids, strict=True):
        media = [found.path.parent / "files" / name for name in v["filenames"]]
        pictures = [np.asarray(Image.open(m).convert("RGB")) for m in media]
        assert all(p.shape == (64, 64, 3) for p in pictures)
        grid = np.asarray(Image.open(grid_file).convert("RGB"))
        assert np.array_equal(grid[:64, :64], pictures[0])  # the grid's first cell
