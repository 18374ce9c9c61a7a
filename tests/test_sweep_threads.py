"""`kshd sweep -j N` on a CPU splits the cores between the N experiments it runs at once.

Two torch processes with a thread per core each, on the same cores, run several times slower
than with the cores split (bench/threads.py measures it). DVC records nothing of the environment
in a queued experiment; the workers of `dvc queue start` inherit its environment and pass it to
every stage they run, so the split is set there.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from kshd.experiments import sweep
from kshd.experiments.sweep import THREAD_VARS, cpu_cores, queue, queue_env, start_queue, wait

from .helpers.dvc_repo import dvc_env, run_ok


def test_jobs_on_a_cpu_get_an_equal_share_of_the_cores():
    assert queue_env(2, {"PATH": "/bin"}, cores=2, cuda=False) == {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    assert queue_env(2, {}, cores=16, cuda=False)["OMP_NUM_THREADS"] == "8"
    assert queue_env(3, {}, cores=16, cuda=False)["MKL_NUM_THREADS"] == "5"
    assert queue_env(4, {}, cores=2, cuda=False)["OMP_NUM_THREADS"] == "1"  # never 0


def test_one_job_cuda_and_a_set_thread_count_leave_the_environment_alone():
    assert queue_env(1, {"A": "b"}, cores=2, cuda=False) == {"A": "b"}
    assert queue_env(4, {"A": "b"}, cores=16, cuda=True) == {"A": "b"}  # a GPU each does the work
    # either variable set: the user's choice, left whole (torch takes MKL's count over OpenMP's,
    # so setting the other one would override it)
    assert queue_env(2, {"OMP_NUM_THREADS": "6"}, cores=16, cuda=False) == {"OMP_NUM_THREADS": "6"}
    assert queue_env(2, {"MKL_NUM_THREADS": "3"}, cores=16, cuda=False) == {"MKL_NUM_THREADS": "3"}


# A stage that records what its process got: the variables and torch's own thread count.
STAGE = (
    "import json, os, torch; json.dump({'threads': torch.get_num_threads(), "
    "'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}}, "
    "open('threads.json', 'w'))"
)


@pytest.mark.slow
@pytest.mark.e2e
def test_queued_stages_run_with_the_split(tmp_path, monkeypatch):
    """Through DVC's real queue, two workers: each experiment's stage process has its share of
    this machine's cores in its variables and in torch.get_num_threads() (torch's own default
    would be every core)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 1\n")
    dvc_yaml = {
        "stages": {
            "threads": {
                "cmd": f'python -c "{STAGE}"',
                "params": ["x"],
                "metrics": [{"threads.json": {"cache": False}}],
            }
        }
    }
    (repo / "dvc.yaml").write_text(json.dumps(dvc_yaml))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        run_ok(cmd, repo)
    run_ok(["git", "commit", "-qm", "threads"], repo)
    for key, value in dvc_env().items():
        monkeypatch.setenv(key, value)
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)  # as a user's shell: nothing set
    monkeypatch.setattr(sweep, "cuda_available", lambda: False)  # on a GPU machine too
    share = max(1, cpu_cores() // 2)

    names = queue(repo, ["x=1,2"])
    start_queue(repo, jobs=2)
    assert set(wait(repo, names, poll=1.0).values()) == {"success"}
    for name in names:
        shown = subprocess.run(
            ["git", "show", f"{_exp_ref(repo, name)}:threads.json"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        got = json.loads(shown)
        env = dict.fromkeys(THREAD_VARS, str(share))
        assert got == {"threads": share, "env": env}


def _exp_ref(repo, name: str) -> str:
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    [ref] = [r for r in refs if r.endswith(f"/{name}")]
    return ref
