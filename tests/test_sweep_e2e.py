"""A sweep as a user runs it: `dvc exp run --queue -S ...`, `dvc queue start`, `kshd compare`.

Four demo experiments (batch size 1 or 2, 1 or 2 epochs) through DVC's real queue in a fresh git
repository, with offline wandb and secrets in the environment that must never be written down.
"""

from __future__ import annotations

import math
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from kshd.cli import main as kshd
from kshd.experiments.sweep import QUEUED, states, wait
from kshd.training.processes import device_record

from .browser import ARGS, CHROMIUM
from .conftest import quick_dvc_params
from .helpers.dvc_repo import clone_of_this_checkout, dvc_env, experiments_shown, link_tiny_models
from .helpers.inprocess import working_dir
from .helpers.wandb_offline import find_offline_runs

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
GRID = {(1, 1), (1, 2), (2, 1), (2, 2)}  # (batch_size, epochs)
# Made up at run time, so that no file of the project can hold them unless something wrote them.
SECRETS = {"HF_TOKEN": f"hf_{secrets.token_hex(12)}", "WANDB_API_KEY": secrets.token_hex(20)}


def _dvc(args: list[str], repo: Path, env: dict) -> str:
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run(
        [dvc, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"dvc {args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_models):
    repo = clone_of_this_checkout(tmp_path_factory.mktemp("sweep"))
    link_tiny_models(repo, tiny_models)  # as `kshd sweep --demo` does; queued copies load them
    env = dvc_env() | SECRETS | {"WANDB_MODE": "offline"}
    out = _dvc(
        ["exp", "run", "--queue", "-S", "+experiment=demo"]
        + ["-S", "train.batch_size=1,2", "-S", "train.epochs=1,2"]
        + quick_dvc_params("train.batch_size", "train.epochs"),  # mechanics, not learning
        repo,
        env,
    )
    names = QUEUED.findall(out)
    assert len(names) == 4, out
    # The queue's worker is a daemon holding our stdout: send it to a file, not a pipe.
    with (repo.parent / "queue-start.log").open("w") as log:
        dvc = str(Path(sys.executable).with_name("dvc"))
        subprocess.run([dvc, "queue", "start"], cwd=repo, env=env, stdout=log, stderr=log)
    final = wait(repo, names, poll=2.0)
    logs = {n: _dvc(["queue", "logs", n], repo, env) for n in names}
    assert all(s == "success" for s in final.values()), {n: logs[n][-2000:] for n in names}
    # `kshd compare` in this process, with the sweep's environment (its secrets among it)
    with pytest.MonkeyPatch.context() as mp, working_dir(repo), pytest.raises(SystemExit) as end:
        for key, value in env.items():
            mp.setenv(key, value)
        kshd(["compare"])
    assert end.value.code == 0
    return repo, names, logs, env


def test_four_experiments_with_the_swept_params(sweep):
    repo, names, _, env = sweep
    show = experiments_shown(repo)
    assert sorted(show) == sorted(names)
    runs = {}
    for data in show.values():
        p = data["params"]["params.yaml"]["data"]["train"]
        runs[p["batch_size"], p["epochs"]] = data["metrics"]["reports/train/metrics.json"]["data"]
        ran_on = {k: v for k, v in device_record(env).items() if v is not None}  # no nulls shown
        assert runs[p["batch_size"], p["epochs"]]["device"] == ran_on  # where it ran
        assert isinstance(data["metrics"]["reports/metrics.json"]["data"]["style_gain"], float)
    assert set(runs) == GRID
    assert {grid: train["epochs"] for grid, train in runs.items()} == {g: g[1] for g in GRID}
    steps = {grid: train["steps"] for grid, train in runs.items()}
    assert steps == _expected_steps(repo, steps[1, 1])
    assert states(repo, names) == dict.fromkeys(names, "success")


def _expected_steps(repo: Path, epoch_items: int) -> dict[tuple[int, int], int]:
    """Each (batch size, epochs)'s steps for epochs of `epoch_items` drawings. The split lives
    in the queued copies only: batch 1 for 1 epoch took one step per drawing, which must be the
    samples less the holdout (at least one), and as many of the demo's regularization drawings."""
    samples = len(list((repo / "data" / "samples").glob("*.png")))
    assert (repo / "data" / "sample_reg").is_dir()  # the demo's data.reg_dir
    assert epoch_items % 2 == 0 and 1 <= epoch_items // 2 < samples
    return {(b, e): math.ceil(epoch_items / b) * e for b, e in GRID}


def test_one_wandb_run_per_experiment_and_stage_in_one_group(sweep):
    repo, names, _, env = sweep
    runs = find_offline_runs(repo / "wandb")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    group = f"baseline-{head.stdout.strip()[:7]}"
    for job in ("train", "evaluate"):
        mine = [r for r in runs if r.job_type == job]
        assert sorted(r.name for r in mine) == sorted(names), job
        assert {r.group for r in mine} == {group}
    logged = {}
    for run in (r for r in runs if r.job_type == "train"):
        train = run.config["train"]
        assert run.config["caption"]["max_new_tokens"] == 12  # the full params
        assert run.config["device"] == device_record(env)  # beside the params
        losses = [h["train/loss"] for h in run.history if "train/loss" in h]
        logged[train["batch_size"], train["epochs"]] = len(losses)
        assert run.summary["train/final_loss"] == losses[-1]
    assert set(logged) == GRID and logged == _expected_steps(repo, logged[1, 1])
    for run in (r for r in runs if r.job_type == "evaluate"):
        assert isinstance(run.summary["eval/style_gain"], float)


def test_caption_and_dataset_ran_once_for_the_whole_sweep(sweep):
    repo, _, logs, _ = sweep
    text = "\n".join(logs.values())
    for stage in ("prepare", "caption", "dataset"):
        assert text.count(f"Running stage '{stage}'") == 1, stage
        assert text.count(f"Stage '{stage}' is cached - skipping run") == 3, stage
    for stage in ("train", "evaluate"):
        assert text.count(f"Running stage '{stage}'") == 4, stage
    caption_runs = [r for r in find_offline_runs(repo / "wandb") if r.job_type == "caption"]
    assert len(caption_runs) == 1


def test_compare_page_lists_the_experiments_with_metrics_and_grids(sweep):
    repo, names, _, env = sweep
    page_dir = repo / "reports" / "compare"
    page = (page_dir / "index.html").read_text(encoding="utf-8")
    rows = dict(re.findall(r'<tr data-exp="([\w-]+)">(.*?)</tr>', page))
    assert sorted(rows) == sorted(names)
    show = experiments_shown(repo)
    for name, cells in rows.items():
        gain = show[name]["metrics"]["reports/metrics.json"]["data"]["style_gain"]
        assert f'data-v="{gain}"' in cells
    assert "train.batch_size" in page and "train.epochs" in page and "best checkpoint" in page
    images = re.findall(r'<figure data-exp="([\w-]+)"><img alt="[^"]*" src="([^"]+)"', page)
    prompts = 4  # the demo's evaluate.prompts
    assert len(images) == prompts * 4 and {n for n, _ in images} == set(names)
    assert all((page_dir / src).stat().st_size > 0 for _, src in images)
    assert page.count("<svg") >= 2 and all(n in page for n in names)  # loss, checkpoints
    # the same comparison as a Markdown table, best style_gain first, with each run's cost
    lines = (page_dir / "table.md").read_text(encoding="utf-8").splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:3] == ["experiment", "train.batch_size", "train.epochs"] and "file MB" in head
    table = [dict(zip(head, (c.strip() for c in r.strip("|").split("|")), strict=True))
             for r in lines[2:]]  # fmt: skip
    assert sorted(r["experiment"] for r in table) == sorted(names)
    gains = [float(r["style_gain"]) for r in table]
    assert gains == sorted(gains, reverse=True)
    assert all(float(r["file MB"]) > 0 and float(r["images/s"]) > 0 for r in table)


def test_secrets_are_never_written(sweep):
    repo, names, logs, env = sweep
    needles = [v.encode() for v in SECRETS.values()]
    skip = repo / ".git"
    for path in repo.rglob("*"):
        if path.is_file() and skip not in path.parents:
            data = path.read_bytes()
            assert not any(n in data for n in needles), path
    for name in names:
        for tracked in ("params.yaml", "dvc.lock"):
            shown = subprocess.run(
                ["git", "show", f"refs/exps/{_ref(repo, name)}:{tracked}"],
                cwd=repo,
                capture_output=True,
            ).stdout
            assert shown and not any(n in shown for n in needles), (name, tracked)
    assert not any(v in "".join(logs.values()) for v in SECRETS.values())


def _ref(repo: Path, name: str) -> str:
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=repo,
        capture_output=True,
        text=True,
    ).stdout.split()
    [ref] = [r for r in refs if r.endswith(f"/{name}")]
    return ref.removeprefix("refs/exps/")


def test_pages_open_in_chromium_with_no_failed_request_and_sort(sweep):
    sync_api = pytest.importorskip("playwright.sync_api")
    repo, names, _, _ = sweep
    failed: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto((repo / "reports/compare/index.html").as_uri())
        page.wait_for_load_state("networkidle")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        header = page.locator("#experiments th", has_text="style_gain")
        column = page.evaluate("(th) => th.cellIndex", header.element_handle())
        header.click()
        values = page.evaluate(
            f"[...document.querySelectorAll('#experiments tbody tr')]"
            f".map(r => Number(r.cells[{column}].dataset.v))"
        )
        page.goto((repo / "reports/compare/plots/index.html").as_uri())
        page.wait_for_load_state("networkidle")
        page.wait_for_selector(".vega-embed canvas, .vega-embed svg", timeout=30000)
        charts = page.evaluate("document.querySelectorAll('.vega-embed').length")
        grids = page.evaluate("document.images.length")
        browser.close()
    assert failed == [] and broken == 0
    assert len(values) == 4 and values == sorted(values, reverse=True)
    assert charts == 2 and grids == 4 * len(names)
