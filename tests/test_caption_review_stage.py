"""Caption review through the caption stage and DVC: the stage writes what review shows (per
drawing its caption and source), honours the exclusions, and after an edit `dvc repro` reruns
caption and what follows it, never prepare."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from kshd.config.compose import compose_conf, load_params, write_params
from kshd.data import caption_review as review
from kshd.data.captioning import read_info_csv

from .helpers.dvc_repo import clone_of_this_checkout, link_tiny_models, run_ok
from .helpers.inprocess import kshd_here, run_stage_here, working_dir
from .stage_project import make_project, noise_drawings

TRIGGER = "drawn by KSH drawing style"
OVERRIDES = ["caption.overrides=data/caption_overrides.csv"]


def _by_drawing(csv_path) -> dict[str, str]:
    """info.csv's captions by raw name (`drawing_001` from `../prepared/drawing_001-<hash>.png`)."""
    return {img.split("/")[-1].rsplit("-", 1)[0]: t for img, t in read_info_csv(csv_path)}


@pytest.fixture
def project(tmp_path, tiny_models):
    """Four noise drawings, prepared, captioned: one by a sidecar, three by overrides (the
    captioner is never made)."""
    root = make_project(tmp_path / "p", tiny_models, OVERRIDES)
    noise_drawings(root / "raw", 4)
    (root / "raw/drawing_000.txt").write_text("1girl, smile", encoding="utf-8")
    (root / "data").mkdir()
    (root / "data/caption_overrides.csv").write_text(
        'image,text\r\ndrawing_001.png,"1boy, hat"\r\ndrawing_002.png,1girl\r\n'
        "drawing_003.png,1other\r\n",
        encoding="utf-8",
    )
    run_stage_here(root, "prepare")
    run_stage_here(root, "caption")
    return root


def _files(root) -> review.ReviewFiles:
    """Review's files of the project in `root` (its params.yaml's paths, under `root`)."""
    with working_dir(root):
        f = review.ReviewFiles.of(load_params())
    under = {k: root / getattr(f, k) for k in ("items", "overrides", "exclusions", "prepared")}
    return dataclasses.replace(f, **under)


def test_the_stage_writes_each_drawing_s_caption_and_source_for_review(project):
    made = json.loads((project / "data/reports/caption_items.json").read_text(encoding="utf-8"))
    rows = {d["file"]: (d["caption"], d["source"], d["split"], d["excluded"])
            for d in made["drawings"]}  # fmt: skip
    assert rows == {
        "drawing_000.png": ("1girl, smile", "sidecar", "train", False),
        "drawing_001.png": ("1boy, hat", "override", "train", False),
        "drawing_002.png": ("1girl", "override", "train", False),
        "drawing_003.png": ("1other", "override", "train", False),
    }
    assert all(d["output"] for d in made["drawings"])  # prepared names, for thumbnails


def test_an_exclusion_leaves_info_csv_and_an_override_changes_it(project, caplog):
    """Excluded by its prepared name, with a reason: out of info.csv, in the report; an
    exclusion row for a drawing that is not there is warned and reported; review's override
    reaches info.csv with the trigger added by the stage."""
    files = _files(project)
    output = review.find(review.load(files), "drawing_002.png").output
    review.exclude(files, output, reason="near copy")
    review.set_caption(files, "drawing_000.png", f"1girl, frown, {TRIGGER}")
    with files.exclusions.open("a", encoding="utf-8") as f:
        f.write("renamed.png,\r\n")
    with caplog.at_level(logging.WARNING):
        run_stage_here(project, "caption")
    info = _by_drawing(project / "data/info.csv")
    assert set(info) == {"drawing_000", "drawing_001", "drawing_003"}
    assert info["drawing_000"] == f"1girl, frown, {TRIGGER}"
    report = json.loads((project / "data/reports/captions.json").read_text(encoding="utf-8"))
    assert report["excluded"] == [{"file": "drawing_002.png", "reason": "near copy"}]
    assert report["unmatched_exclusions"] == ["renamed.png"]
    assert report["captions"] == 3
    assert any("renamed.png" in r.getMessage() for r in caplog.records)
    shown = {d.file: d for d in review.load(files)}
    assert shown["drawing_002.png"].excluded and not shown["drawing_002.png"].edited
    assert shown["drawing_000.png"].source == "override" and not shown["drawing_000.png"].edited


@pytest.mark.slow
@pytest.mark.e2e
def test_after_a_cli_edit_dvc_repro_reruns_caption_and_dataset_not_prepare(
    tmp_path_factory, tiny_models, capsys
):
    """In a clone of this checkout on the demo's samples (captions from the overrides, no
    model): `dvc repro dataset`, then `kshd captions set` and `exclude`; `dvc status` names
    caption's changed deps, `dvc repro dataset` runs caption and dataset and skips prepare, and
    info.csv has the new caption and lacks the excluded drawing (train depends on the dataset
    stage's output, so a full `dvc repro` retrains; too slow to run here)."""
    repo = clone_of_this_checkout(tmp_path_factory.mktemp("repo"))
    link_tiny_models(repo, tiny_models)
    write_params(compose_conf(["+experiment=demo", "caption=none", "tracking.mode=disabled"],
                              conf_dir=repo / "conf"), repo / "params.yaml")  # fmt: skip
    run_ok(["dvc", "repro", "dataset"], repo)
    first = _by_drawing(repo / "data/info.csv")
    name = sorted(first)[0]
    raw = next(d.file for d in review.load(_files(repo)) if d.file.startswith(name))
    gone = next(d.file for d in review.load(_files(repo)) if not d.file.startswith(name))
    assert kshd_here(["captions", "set", raw, "1girl, reviewed"], capsys, repo).returncode == 0
    assert kshd_here(["captions", "exclude", gone], capsys, repo).returncode == 0
    status = run_ok(["dvc", "status", "caption", "dataset"], repo).stdout
    assert "data/sample_captions.csv" in status, status  # the demo's caption.overrides
    assert "caption_exclusions.csv" in status, status
    out = run_ok(["dvc", "repro", "dataset"], repo)
    log = out.stdout + out.stderr
    assert "Running stage 'caption'" in log and "Running stage 'dataset'" in log, log
    assert "Stage 'prepare' didn't change" in log, log
    after = _by_drawing(repo / "data/info.csv")
    assert after[name] == f"1girl, reviewed, {TRIGGER}"
    assert gone.rsplit(".", 1)[0] not in after and len(after) == len(first) - 1
