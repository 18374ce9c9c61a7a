"""`kshd sweep --executor slurm` as SLURM sees it: the sbatch file submitit writes from
conf/cluster/, the jobs it pickles, the commit it makes reachable; then `--collect` before any
job pushed. `sbatch` is a stand-in script that keeps what it was given and answers as SLURM."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from kshd.cli import main as kshd
from kshd.experiments.cluster import experiment_grid
from kshd.experiments.cluster_job import ExperimentJob

from .helpers.dvc_repo import ROOT, clone_of_this_checkout, dvc_env, run_ok
from .helpers.inprocess import working_dir

SBATCH = """#!/bin/sh
n=$(ls "{out}" | wc -l)
cp "$1" "{out}/sbatch-$n.sh"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def slurm_workspace(tmp_path, monkeypatch):
    ws = clone_of_this_checkout(tmp_path / "ws")
    run_ok(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], tmp_path)
    run_ok(["git", "remote", "add", "origin", "../origin.git"], ws)  # relative, as users write
    run_ok(["dvc", "remote", "add", "-d", "storage", "../store"], ws)  # committed below
    run_ok(["git", "commit", "-qam", "a DVC remote"], ws)
    (tmp_path / "bin").mkdir()
    (tmp_path / "sbatched").mkdir()
    for name, text in (("sbatch", SBATCH.format(out=tmp_path / "sbatched")), ("srun", "")):
        fake = tmp_path / "bin" / name  # srun: submitit looks for it; the job would run it
        fake.write_text(text or "#!/bin/sh\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    for key, value in dvc_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return ws


def test_the_grid_is_dvcs_own():
    """The same experiments, in the same order, as `dvc exp run --queue -S` queues."""
    grid = experiment_grid(["train.batch_size=1,2", "train.epochs=3,5", "model=world"])
    assert [g[:2] for g in grid] == [
        ["train.batch_size=1", "train.epochs=3"],
        ["train.batch_size=1", "train.epochs=5"],
        ["train.batch_size=2", "train.epochs=3"],
        ["train.batch_size=2", "train.epochs=5"],
    ]
    assert all(g[2] == "model=world" for g in grid)
    assert experiment_grid(["train.validation_prompt='a, b'"]) == [
        ["train.validation_prompt='a, b'"]
    ]


def test_slurm_jobs_carry_the_cluster_config(slurm_workspace, caplog):
    ws = slurm_workspace
    cluster = ["cluster.partition=gpu", "cluster.timeout_min=90", "cluster.max_running=1",
               "cluster.setup=[module load cuda]", "+cluster.sbatch.account=art"]  # fmt: skip
    args = ["-S", "train.batch_size=1,2", "-S", "train.epochs=3", *cluster]
    with working_dir(ws), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--executor", "slurm", "--no-wait", "--group", "s", *args])
    assert end.value.code == 0
    [script] = (ws.parent / "sbatched").iterdir()  # one array job
    lines = script.read_text().splitlines()
    for flag in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--mem=32GB",
                 "--cpus-per-task=8", "--array=0-1%1", "--account=art", "--signal=USR2@90",
                 "--job-name=s"):  # fmt: skip
        assert f"#SBATCH {flag}" in lines, (flag, lines)
    assert "module load cuda" in lines
    head = run_ok(["git", "rev-parse", "HEAD"], ws).stdout.strip()
    shown = run_ok(["git", "rev-parse", "refs/kshd/sweeps/s"], ws.parent / "origin.git")
    assert shown.stdout.strip() == head  # the clones fetch it there
    record = json.loads((ws / ".kshd/cluster/s/sweep.json").read_text())
    assert [e["job_id"] for e in record["experiments"]] == ["4242_0", "4242_1"]
    jobs = [
        _pickled_job(ws / ".kshd/cluster/s/submitit", e["job_id"]) for e in record["experiments"]
    ]
    assert [j.name for j in jobs] == ["s-1", "s-2"]
    assert [j.overrides for j in jobs] == [
        ["train.batch_size=1", "train.epochs=3", "tracking.group=s"],
        ["train.batch_size=2", "train.epochs=3", "tracking.group=s"],
    ]
    for job in jobs:
        assert job.commit == head and job.ref == "refs/kshd/sweeps/s"
        assert job.remotes.git_url == str(ws.parent / "origin.git")  # absolute for the nodes
        assert (job.remotes.dvc_name, job.remotes.dvc_url) == ("storage", str(ws.parent / "store"))
        assert Path(job.clone).parent == ws / ".kshd/cluster/s"
    # collected before any job pushed: nothing pulled, each missing one named with what
    # submitit's files say of it (s-2 failed: the result file a failed job leaves), exit 1
    failed = ws / ".kshd/cluster/s/submitit/4242_1/4242_1_0_result.pkl"
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_bytes(pickle.dumps(("error", "Traceback (...)\nDvcError: exited 2")))
    caplog.clear()
    with working_dir(ws), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--collect"])  # the newest sweep
    assert end.value.code == 1
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "2 of 2 experiments not pushed yet" in warned
    assert "s-1: not ended (log " in warned and "s-2: failed: DvcError: exited 2" in warned
    # the same group again is refused: its clones and record are that sweep's
    caplog.clear()
    with working_dir(ws), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--executor", "slurm", "--no-wait", "--group", "s", *args])
    assert end.value.code == 2
    assert "holds that sweep already" in caplog.records[-1].getMessage()


def _pickled_job(folder: Path, job_id: str) -> ExperimentJob:
    [found] = folder.rglob(f"{job_id}_submitted.pkl")
    with found.open("rb") as f:
        delayed = pickle.load(f)
    assert isinstance(delayed.function, ExperimentJob)
    return delayed.function


def test_slurm_without_sbatch_is_refused_in_one_line(slurm_workspace, monkeypatch, caplog):
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])  # the fake one gone
    with working_dir(slurm_workspace), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--executor", "slurm", "-S", "train.epochs=3"])
    assert end.value.code == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "sbatch" in line and "--executor local" in line


def test_queue_options_are_refused_for_cluster_jobs(tmp_path, monkeypatch, caplog):
    """--gpus / -j pin the queue's workers here; a cluster job's resources are conf/cluster/'s,
    and a positional override is the sweep's own config: an experiment's key there is named."""
    monkeypatch.chdir(tmp_path)  # refused before anything is read
    for extra, said in (
        (["--gpus", "0,1"], "cluster.gpus_per_job"),
        (["-j", "2"], "cluster.max_running"),
        (
            ["train.rank=8"],
            "train.rank=8: not a cluster.* key; an experiment's value goes after -S",
        ),
    ):
        caplog.clear()
        with pytest.raises(SystemExit) as end:
            kshd(["sweep", "--executor", "slurm", "-S", "train.epochs=1,2", *extra])
        assert end.value.code == 2
        [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert said in line


def test_demo_builds_the_tiny_models_first_whatever_the_executor(monkeypatch):
    """`kshd sweep --demo` hands the demo world's builder to the sweep, which calls it before
    queueing or submitting: the stages never build models (the product never imports the demo
    world; the command passes it in)."""
    import kshd_world.demo
    from kshd.experiments import cluster, sweep

    built, ran = [], []
    monkeypatch.setattr(kshd_world.demo, "demo_models", lambda root, o: built.append(list(o)))

    def run(root, overrides, prepare):
        prepare(root, overrides)
        ran.append(list(overrides))
        return 0

    monkeypatch.setattr(
        sweep, "run_sweep", lambda root, o, jobs, group, prepare, gpus: run(root, o, prepare)
    )
    monkeypatch.setattr(
        cluster, "run_cluster_sweep",
        lambda root, kind, o, cfg, group, prepare, wait: run(root, o, prepare),
    )  # fmt: skip
    monkeypatch.chdir(ROOT)  # its conf/ composes the experiments' config; nothing is written
    for executor in ("queue", "local"):
        with pytest.raises(SystemExit) as end:
            kshd(["sweep", "--demo", "--executor", executor, "-S", "train.epochs=1,2"])
        assert end.value.code == 0
    assert built == ran == [["+experiment=demo", "train.epochs=1,2"]] * 2
