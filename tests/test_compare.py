"""kshd compare: parsing `dvc exp show --json`, the page, and DVC's plots page without a CDN."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from kshd.experiments.compare import CompareError, offline_template, select, svg
from kshd.experiments.compare_page import render
from kshd.experiments.dvc import DvcError
from kshd.experiments.finished import Experiment, differing, experiments_from_show
from kshd.experiments.sweep import states
from kshd.experiments.table import markdown_table

from .helpers.dvc_repo import run_ok

FILES = {"reports/metrics.json": "", "reports/train/metrics.json": "train."}


def _exp(name: str, state: str, epochs: int, style_gain: float | None) -> dict:
    device = {"cuda_visible_devices": "1", "name": "cpu", "count": 1}  # a record, not a metric
    train = {"final_loss": 0.5, "latents": {"a": 1}, "device": device}
    metrics = {"reports/train/metrics.json": {"data": train}}
    if style_gain is not None:
        metrics["reports/metrics.json"] = {
            "data": {"style_gain": style_gain, "best_checkpoint": {"step": 6, "by": "style_gain"}}
        }
    else:
        metrics["reports/metrics.json"] = {"error": {"type": "FileNotFoundError"}}
    params = {"train": {"epochs": epochs, "batch_size": 1}, "evaluate": {"seeds": [0, 1]}}
    return {
        "name": name,
        "executor": {"state": state},
        "revs": [
            {
                "rev": f"{name}-sha",
                "name": name,
                "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics},
            }
        ],
    }


SHOW = [
    {"rev": "workspace", "name": None, "data": {}, "experiments": None},
    {
        "rev": "base",
        "name": "main",
        "data": {},
        "experiments": [
            _exp("done-a", "success", 10, 0.2),
            _exp("done-b", "success", 50, -0.1),
            _exp("failed-c", "failed", 10, None),
            _exp("running-d", "running", 50, None),
            _exp("odd-e", "success", 50, None),  # finished but never evaluated
        ],
    },
]


def test_only_finished_evaluated_experiments_are_compared():
    exps = experiments_from_show(SHOW, FILES)
    assert [e.name for e in exps] == ["done-a", "done-b"]
    a = exps[0]
    assert a.rev == "done-a-sha" and a.params["train.epochs"] == 10
    assert a.metrics == {"style_gain": 0.2, "best_checkpoint.step": 6, "train.final_loss": 0.5}
    assert a.best_checkpoint == {"step": 6, "by": "style_gain"}
    assert differing(exps) == ["train.epochs"]


def test_an_sd1_and_an_sdxl_run_compare_with_their_family_shown():
    runs = [_exp("anything", "success", 10, 0.2), _exp("xl", "success", 10, 0.3)]
    show = [{"rev": "base", "name": "main", "data": {}, "experiments": runs}]
    for exp, family in zip(show[0]["experiments"], ("sd1", "sdxl"), strict=True):
        exp["revs"][0]["data"]["metrics"]["reports/metrics.json"]["data"]["model_family"] = family
    exps = experiments_from_show(show, FILES)
    assert [e.params["model.family"] for e in exps] == ["sd1", "sdxl"]
    assert differing(exps) == ["model.family"]  # a column of the page
    assert "model_family" not in exps[0].metrics  # a name, not a number to plot


def test_unknown_experiment_names_are_reported_with_the_known_ones():
    exps = experiments_from_show(SHOW, FILES)
    assert [e.name for e in select(exps, ["done-b"])] == ["done-b"]
    with pytest.raises(CompareError, match="no finished experiment named nope.*done-a, done-b"):
        select(exps, ["nope"])


def test_page_table_curves_and_grids(tmp_path):
    exps = [
        Experiment("a", "1", {"train.epochs": 10, "evaluate.prompts": ["p0"]}, {"style_gain": 0.2}),
        Experiment("b", "2", {"train.epochs": 50, "evaluate.prompts": ["p0"]}, {"style_gain": -1}),
    ]
    images = {
        "reports/grids/prompt-00.png": {
            "a": tmp_path / "plots/a.png",
            "b": tmp_path / "plots/b.png",
        }
    }
    page = render(
        exps, ["train.epochs"], {"reports/train/loss.csv": "<svg>x</svg>"}, images, tmp_path
    )
    rows = re.findall(r'<tr data-exp="(\w)">(.*?)</tr>', page)
    assert [r[0] for r in rows] == ["a", "b"]
    assert 'data-v="10"' in rows[0][1] and 'data-v="-1"' in rows[1][1]
    assert "<h3>p0</h3>" in page and 'src="plots/a.png"' in page and 'src="plots/b.png"' in page
    assert "<svg>x</svg>" in page and "th[data-sort]" in page
    assert "http://" not in page and "https://" not in page


def test_curves_render_to_svg_without_a_browser():
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {
            "values": [
                {"step": s, "loss": 1 / s, "rev": r}
                for s in (1, 2, 3)
                for r in ("exp-one", "exp-two")
            ]
        },
        "mark": "line",
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "loss", "type": "quantitative"},
            "color": {"field": "rev", "type": "nominal"},
        },
    }
    out = svg(spec)
    assert out.startswith("<svg") and "exp-one" in out and "exp-two" in out
    assert len(re.findall(r"<path[^>]*aria-roledescription=\"line mark\"", out)) == 2


def test_dvc_plots_page_uses_the_inlined_vega_not_a_cdn(tmp_path):
    from dvc_render import render_html
    from dvc_render.vega import VegaRenderer

    template = offline_template(tmp_path)
    assert template == tmp_path / "tmp" / "offline-plots.html"
    points = [{"step": 1, "loss": 1.0, "rev": "a"}, {"step": 2, "loss": 0.5, "rev": "a"}]
    renderer = VegaRenderer(points, "loss.csv", x="step", y="loss")
    page = Path(render_html([renderer], tmp_path / "plots" / "index.html", template))
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in text and "<script src" not in text
    assert "window.vegaEmbed" in text and "vegaEmbed('#" in text
    before = template.stat().st_mtime_ns
    assert offline_template(tmp_path).stat().st_mtime_ns == before  # written once


def test_compare_without_experiments_says_how_to_make_some(tmp_path, caplog):
    import shutil
    import subprocess
    import sys

    from kshd.cli import main

    from .conftest import ROOT

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    with pytest.MonkeyPatch.context() as m, pytest.raises(SystemExit) as stop:
        m.chdir(tmp_path)
        main(["compare"])
    assert stop.value.code == 2
    assert "no finished experiment to compare" in caplog.text and "dvc queue start" in caplog.text
    assert not (tmp_path / "reports").exists()


def test_a_query_that_meets_a_half_written_queue_file_is_asked_again(tmp_path, monkeypatch):
    """`dvc queue status` can read a file the queue's worker is writing and stop with "unexpected
    error"; a sweep's read-only query asks again instead of ending (CI saw it once)."""
    import kshd.experiments.dvc as dvc

    calls = tmp_path / "calls"
    fake = tmp_path / "dvc"
    fake.write_text(
        "#!/bin/sh\necho x >> " + str(calls) + "\n"
        'if [ "$(wc -l < ' + str(calls) + ')" -lt 2 ]; then\n'
        '  echo "ERROR: unexpected error - Expecting value: line 1 column 1" >&2; exit 255\n'
        "fi\necho queued\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(dvc, "dvc_executable", lambda: str(fake))
    assert dvc.run_dvc(tmp_path, ["queue", "status"], timeout=60, tries=3) == "queued\n"
    assert calls.read_text().count("x") == 2
    calls.unlink()
    with pytest.raises(dvc.DvcError, match="unexpected error"):  # a command is not retried
        dvc.run_dvc(tmp_path, ["queue", "status"])


def test_queue_states_are_read_in_process_as_dvc_queue_status_prints_them(tmp_path):
    """The sweep's wait reads the queue through DVC's queue object, not a `dvc` process per poll:
    the states must be the ones `dvc queue status` prints, for the named experiments only."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n"
    )
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):  # fmt: skip
        run_ok(cmd, tmp_path)
    for name in ("first", "second"):
        run_ok([dvc, "exp", "run", "--queue", "--name", name], tmp_path)
    printed = run_ok([dvc, "queue", "status"], tmp_path).stdout
    assert re.search(r"\bfirst\b.*\bQueued\b", printed) and re.search(
        r"\bsecond\b.*Queued", printed
    )
    assert states(tmp_path, ["first", "second", "third"]) == {"first": "queued", "second": "queued"}


def test_a_half_written_queue_file_read_in_process_is_read_again(tmp_path, monkeypatch):
    """DVC's queue object can meet a result file the worker is writing (a JSON error, as the
    command's "unexpected error"): the sweep's wait reads again, and names the queue when it
    keeps failing."""
    import dvc.repo

    reads = []

    class Queue:
        def status(self):
            reads.append(1)
            if len(reads) < 2:
                raise json.JSONDecodeError("Expecting value", "", 0)
            return [{"name": "a", "status": "Running"}]

    class Repo:
        def __init__(self, root):
            self.experiments = type("E", (), {"celery_queue": Queue()})()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(dvc.repo, "Repo", Repo)
    assert states(tmp_path, ["a"]) == {"a": "running"} and len(reads) == 2
    reads.clear()
    with pytest.raises(DvcError, match=str(tmp_path)):
        states(tmp_path, ["a"], tries=1)


def test_the_markdown_table_ranks_by_style_gain_and_leaves_a_missing_metric_empty():
    """table.md: a row per experiment, best style_gain first, the differing params and each
    run's cost; a metric an older run lacks is an empty cell, a `|` in a value is escaped."""
    exps = [
        Experiment("low", "r1", {"train.adapter.kind": "lora"}, {"style_gain": 0.01}),
        Experiment("high", "r2", {"train.adapter.kind": "lo|ha"},
                   {"style_gain": 0.2, "train.adapter_mb": 1.5}, {"step": 40}),
    ]  # fmt: skip
    lines = markdown_table(exps, ["train.adapter.kind"]).splitlines()
    assert lines[0].startswith("| experiment | train.adapter.kind | style_gain | trigger_gain |")
    assert lines[1] == "| " + " | ".join(["---"] * 9) + " |"
    assert lines[2] == "| high | lo\\|ha | 0.2 |  |  | 1.5 |  |  | 40 |"
    assert lines[3] == "| low | lora | 0.01 |  |  |  |  |  |  |"


def test_the_table_leaves_out_what_a_group_s_kind_implies():
    """Sweeping train/adapter makes every key of the kinds differ; the table shows the kind and
    only the keys that vary within a kind (here LoKr's factor), so it stays readable."""

    def exp(name, kind, factor, tucker):
        params = {"train.adapter.kind": kind, "train.adapter.factor": factor,
                  "train.adapter.use_tucker": tucker, "train.epochs": 1}  # fmt: skip
        return Experiment(name, name, params, {"style_gain": 0.1})

    exps = [exp("a", "lora", None, None), exp("b", "lokr", -1, False), exp("c", "lokr", 4, False)]
    params = differing(exps)
    assert params == ["train.adapter.factor", "train.adapter.kind", "train.adapter.use_tucker"]
    head = markdown_table(exps, params).splitlines()[0]
    assert head.startswith("| experiment | train.adapter.factor | train.adapter.kind | style_gain")
