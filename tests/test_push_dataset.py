"""`kshd push-dataset`: a real upload through huggingface_hub, to a local stand-in for the Hub."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from datasets import load_from_disk

from kshd.config.compose import compose_conf, write_params
from kshd.data.dataset import save_dataset
from kshd_world.samples import noise_drawings

from .conftest import ROOT
from .fake_hub import start_fake_hub


@pytest.fixture
def project(tmp_path):
    """A project folder with params.yaml and a saved dataset of 12 drawings."""
    noise_drawings(tmp_path, 12, 16)
    save_dataset(tmp_path / "info.csv", tmp_path / "data" / "dataset", 0.25, "t")
    write_params(compose_conf([], conf_dir=ROOT / "conf"), tmp_path / "params.yaml")
    return tmp_path


def _push(root, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_XET": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "kshd.cli", "push-dataset", *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # a subprocess, as the user runs it: ~12 s here, most of it imports
def test_push_uploads_every_split_to_the_hub_api(project):
    import pyarrow.parquet as pq

    hub, server = start_fake_hub()
    try:
        proc = _push(
            project, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}, "dataset.hub_repo=me/ksh"
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    [created] = hub.created
    assert (created["organization"], created["name"], created["type"]) == ("me", "ksh", "dataset")
    assert created.get("visibility", "private" if created.get("private") else "") == "private"
    local = load_from_disk(str(project / "data" / "dataset"))
    for split in ("train", "holdout"):
        [name] = [p for p in hub.files if p.startswith(f"data/{split}-")]
        table = pq.read_table(io.BytesIO(hub.files[name]))
        assert table.num_rows == len(local[split]) and table.column_names == ["image", "text"]
    assert "/datasets/me/ksh/commit/" in proc.stderr  # the commit URL is said


def _push_here(project, monkeypatch, *overrides: str) -> int:
    from kshd.cli import build_parser

    monkeypatch.chdir(project)
    args = build_parser().parse_args(["push-dataset", *overrides])
    return args.func(args)


def test_offline_push_fails_at_once_with_the_local_dataset_intact(project, monkeypatch, caplog):
    hub, server = start_fake_hub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = sorted(
        p.read_bytes() for p in (project / "data" / "dataset").rglob("*") if p.is_file()
    )
    try:
        code = _push_here(project, monkeypatch, "dataset.hub_repo=me/ksh")
    finally:
        server.shutdown()
    assert code == 2 and hub.requests == []  # nothing was even tried
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "me/ksh" in line and "HF_HUB_OFFLINE" in line and "is intact" in line
    after = sorted(p.read_bytes() for p in (project / "data" / "dataset").rglob("*") if p.is_file())
    assert after == before


def test_push_without_a_repo_names_the_key(project, monkeypatch, caplog):
    assert _push_here(project, monkeypatch) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "`dataset.hub_repo` is empty" in line and "kshd push-dataset" in line
