"""A sweep as cluster jobs: `kshd sweep --executor local` runs each experiment as a submitit job
in its own clone of a git remote (a bare repository here), each pushes its experiment there and
its outputs to a DVC remote (a folder), and `--collect` brings them back to the workspace.

submitit's local executor is the SLURM executor's stand-in: the same job objects, pickled,
started as processes, pre-empted by the same signal (USR2) and requeued by submitit itself.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psutil
import pytest
from submitit import JobEnvironment

from kshd.cli import main as kshd
from kshd.config.compose import compose_conf
from kshd.experiments.cluster import submit

from .conftest import QUICK_EVAL, QUICK_TRAIN
from .helpers.dvc_repo import (
    clone_of_this_checkout,
    dvc_env,
    experiments_shown,
    link_tiny_models,
    run_ok,
)
from .helpers.inprocess import working_dir

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
# The demo made quick, long enough to be pre-empted after a checkpoint and before its end.
LONG = ["train.epochs=12", "train.checkpointing_steps=4", "train.checkpoints_total_limit=null"]
LONG_KEYS = {o.split("=")[0] for o in LONG}
QUICK = [o for o in QUICK_TRAIN + QUICK_EVAL if o.split("=")[0] not in LONG_KEYS]
GRID = ["+experiment=demo", "train.batch_size=1,2", *LONG, *QUICK]
LORA_FILES = ("pytorch_lora_weights.safetensors", "ksh_drawing_style.safetensors")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_models):
    """A project with a bare git remote (`origin`) and a folder as its default DVC remote, set in
    the workspace's local config only (the jobs' clones get it from the sweep)."""
    base = tmp_path_factory.mktemp("cluster")
    ws = clone_of_this_checkout(base / "ws")
    link_tiny_models(ws, tiny_models)
    run_ok(["git", "init", "-q", "--bare", str(base / "origin.git")], base)
    run_ok(["git", "remote", "add", "origin", str(base / "origin.git")], ws)
    run_ok(["dvc", "remote", "add", "--local", "-d", "storage", str(base / "store")], ws)
    with pytest.MonkeyPatch.context() as mp:
        # one thread per job, for the jobs that run side by side and the one run alone alike:
        # the same float sums, so the same LoRA bytes
        threads = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
        for key, value in (dvc_env() | {"WANDB_MODE": "offline"} | threads).items():
            mp.setenv(key, value)
        yield ws


@pytest.fixture(scope="module")
def swept(workspace):
    """`kshd sweep --executor local` of two experiments, waited for and collected."""
    args = [a for o in GRID for a in ("-S", o)]
    with working_dir(workspace), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--executor", "local", "--group", "g", *args])
    assert end.value.code == 0
    record = json.loads((workspace / ".kshd/cluster/g/sweep.json").read_text())
    return workspace, record


def test_each_experiment_ran_as_a_job_in_its_own_clone(swept):
    ws, record = swept
    head = run_ok(["git", "rev-parse", "HEAD"], ws).stdout.strip()
    assert record["commit"] == head and record["executor"] == "local"
    names = [e["name"] for e in record["experiments"]]
    assert names == ["g-1", "g-2"]
    jobs = {e["job_id"] for e in record["experiments"]}
    assert len(jobs) == 2
    for e in record["experiments"]:
        clone = Path(e["clone"])
        assert clone.parent == ws / ".kshd/cluster/g" and (clone / ".git").is_dir()
        assert run_ok(["git", "rev-parse", "HEAD"], clone).stdout.strip() == head
        assert (clone / "models/lora/ksh_drawing_style.safetensors").is_file()
    # both experiments are on the git remote, their outputs in the DVC remote
    refs = run_ok(["git", "for-each-ref", "--format=%(refname)"], ws.parent / "origin.git")
    assert sorted(r.rsplit("/", 1)[-1] for r in refs.stdout.split() if "/exps/" in r) == names
    assert any((ws.parent / "store").rglob("*"))


def test_collect_brings_both_into_dvc_exp_show_and_the_comparison(swept):
    ws, record = swept
    show = experiments_shown(ws)
    assert sorted(show) == ["g-1", "g-2"]
    batch = {}
    for name, data in show.items():
        batch[name] = data["params"]["params.yaml"]["data"]["train"]["batch_size"]
        train = data["metrics"]["reports/train/metrics.json"]["data"]
        assert train["epochs"] == 12 and train["steps"] > 0
        assert isinstance(data["metrics"]["reports/metrics.json"]["data"]["style_gain"], float)
    assert batch == {"g-1": 1, "g-2": 2}
    page = (ws / "reports/compare/index.html").read_text(encoding="utf-8")
    assert sorted(re.findall(r'<tr data-exp="([\w-]+)">', page)) == ["g-1", "g-2"]
    # a second collect pulls nothing new and says the same
    with working_dir(ws), pytest.raises(SystemExit) as end:
        kshd(["sweep", "--collect", "--group", "g"])
    assert end.value.code == 0 and sorted(experiments_shown(ws)) == ["g-1", "g-2"]


def test_a_preempted_job_resumes_to_the_same_lora(swept):
    """USR2 after checkpoint-8 (as SLURM warns before pre-emption or the time limit): the run
    stops after a checkpoint, submitit requeues the job, and it ends with the bytes of the same
    experiment run uninterrupted (g-2 of the sweep)."""
    ws, record = swept
    [reference] = [e for e in record["experiments"] if e["name"] == "g-2"]
    overrides = [o for o in reference["overrides"] if not o.startswith("tracking.group=")]
    cfg = compose_conf(overrides, conf_dir=ws / "conf")
    record_path, [job] = submit(ws, "local", cfg, overrides, "pre")
    clone = Path(json.loads(record_path.read_text())["experiments"][0]["clone"])
    _wait_for_line(clone / "kshd-job.log", r"checkpoint-8 saved", job)
    _preempt(job)
    result = job.result()
    assert result["name"] == "pre-1"
    log = (clone / "kshd-job.log").read_text(encoding="utf-8")
    assert log.count("Running stage 'train'") == 2, log[-3000:]
    train = json.loads((clone / "reports/train/metrics.json").read_text())
    assert train["resumed_from"].startswith("checkpoint-")
    assert int(train["resumed_from"].split("-")[1]) >= 8
    assert "Requeued job" in Path(job.paths.stderr).read_text() + Path(job.paths.stdout).read_text()
    for name in LORA_FILES:
        mine = (clone / "models/lora" / name).read_bytes()
        assert mine == (Path(reference["clone"]) / "models/lora" / name).read_bytes(), name


def _preempt(job) -> None:
    """SLURM's warning before pre-emption or the time limit (`--signal=USR2@90`, which submitit
    asks for) to the job's task process, as the local executor's controller sends it before its
    own time limit. The local job's id is its controller's pid; the task is its one child."""
    [task] = psutil.Process(int(job.job_id)).children()
    task.send_signal(JobEnvironment._usr_sig())


def _wait_for_line(path: Path, pattern: str, job, timeout: float = 600) -> None:
    """Follow the run's output file (as `tail -f`) until a line matches; fail if the job ends."""
    deadline, regex = time.monotonic() + timeout, re.compile(pattern)
    while time.monotonic() < deadline:
        if path.exists() and regex.search(path.read_text(encoding="utf-8", errors="replace")):
            return
        assert not job.done(), f"the job ended before /{pattern}/: {job.paths.stderr}"
        time.sleep(0.2)
    raise AssertionError(f"no /{pattern}/ in {path} after {timeout} s")


def test_uncommitted_work_is_refused_in_one_line(workspace, caplog):
    """The jobs run the commit: a drawing added but not committed would be silently missing."""
    extra, readme = workspace / "data/samples/new.png", workspace / "README.md"
    text = readme.read_bytes()
    extra.write_bytes(b"x")
    readme.write_bytes(text + b"\nan edit\n")  # a tracked file changed: listed first
    try:
        with working_dir(workspace), pytest.raises(SystemExit) as end:
            kshd(["sweep", "--executor", "local", "-S", "+experiment=demo"])
    finally:
        extra.unlink()
        readme.write_bytes(text)
    assert end.value.code == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "2 uncommitted change(s) (README.md, data/samples/new.png)" in line, line
    assert "commit" in line


def test_a_missing_git_or_dvc_remote_is_refused_in_one_line(tmp_path, caplog):
    repo = clone_of_this_checkout(tmp_path / "r")

    def refused(*args: str) -> str:
        caplog.clear()
        with working_dir(repo), pytest.raises(SystemExit) as end:
            kshd(["sweep", "--executor", "local", "-S", "train.epochs=1", *args])
        assert end.value.code == 2
        [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        return line

    line = refused("cluster.git_remote=nowhere")
    assert "cluster.git_remote" in line and "git remote add nowhere" in line
    run_ok(["git", "remote", "add", "origin", str(tmp_path / "bare")], repo)
    line = refused()
    assert "cluster.dvc_remote" in line and "dvc remote add -d" in line
