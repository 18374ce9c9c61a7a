"""Each DVC stage depends on every `kshd` file it can run, found by walking its imports.

A stage's code is what its entry point (`src/kshd/stages/<stage>.py`, with the shared
`stages/__init__.py`) imports inside `kshd`, transitively, function-level imports included. Each
such file must be covered by a code dep of the stage in `dvc.yaml` (the file or a folder above
it), or an edit to it would not rerun the stage; and no dep may name a path that does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .helpers.imports import PACKAGE, ROOT, SRC, reached_files


def code_deps(stage: dict) -> list[str]:
    """The stage's deps that are code (not `${...}` data paths)."""
    return [d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("src/")]


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """The files that no dep names, itself or through a folder above it."""
    roots = [ROOT / d for d in deps]
    return sorted(
        str(f.relative_to(ROOT)) for f in files if not any(f == r or r in f.parents for r in roots)
    )


def stage_files(stage: str) -> set[Path]:
    """What `python -m kshd.stages.<stage>` can run: its module and the shared stages package."""
    return reached_files([PACKAGE / "stages" / f"{stage}.py", PACKAGE / "stages" / "__init__.py"])


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_kshd_files_it_imports(stage):
    entry = PACKAGE / "stages" / f"{stage}.py"
    assert entry.is_file(), f"dvc.yaml stage {stage!r} has no entry point {entry}"
    assert STAGES[stage]["cmd"].endswith(f"-m kshd.stages.{stage}")
    deps, reached = code_deps(STAGES[stage]), stage_files(stage)
    wanted = "".join(f"\n      - {f.relative_to(ROOT)}" for f in sorted(reached))
    missing = uncovered(reached, deps)
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps {missing}; all it runs:{wanted}"
    absent = [d for d in deps if not (ROOT / d).exists()]
    assert not absent, f"dvc.yaml stage {stage!r} names deps that do not exist: {absent}"
    unused = [d for d in deps if not uncovered(reached, [*set(deps) - {d}])]
    assert not unused, f"dvc.yaml stage {stage!r} has deps it never imports: {unused}{wanted}"


def test_folder_deps_ignore_bytecode():
    """An editable install writes `__pycache__/` into src/: in a folder dep, it would make DVC
    see changed code after every Python upgrade or checkout, and rerun a real training."""
    folders = {d for s in STAGES.values() for d in code_deps(s) if (ROOT / d).is_dir()}
    if folders:
        ignore = (ROOT / ".dvcignore").read_text(encoding="utf-8").split()
        assert "__pycache__/" in ignore, f"folder deps {sorted(folders)} need .dvcignore"


def test_the_walk_follows_function_level_imports_and_names_what_a_dep_list_lacks():
    """The check itself: the train stage reaches the files its code imports inside a function,
    and a dep list without them names each missing file."""
    reached = stage_files("train")
    names = {str(p.relative_to(ROOT)) for p in reached}
    assert "src/kshd/adapters/lora.py" in names  # the default kind, through the registry
    assert "src/kshd/training/latent_cache.py" in names  # imported inside a function
    assert "src/kshd/drawing/gui.py" not in names  # in the package, never imported by it
    assert "src/kshd/__init__.py" not in names  # a docstring and a version: runs nothing
    assert uncovered(reached, ["src/kshd/training", "src/kshd/config"]) == sorted(
        n for n in names if not n.startswith(("src/kshd/training/", "src/kshd/config/"))
    )
    assert uncovered(reached, ["src/kshd"]) == []


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_runs_or_depends_on_a_model_builder(stage):
    """Editing a demo builder must not rerun a real user's 50-epoch training: the stages only
    check that the model folders exist (`make demo` builds the tiny ones), so no builder is
    among the files a stage runs, nor among its deps, and `tiny` is none of its params."""
    builders = SRC / "kshd_world"
    ran = sorted(str(f.relative_to(ROOT)) for f in stage_files(stage) if builders in f.parents)
    assert ran == [], f"stage {stage!r} imports model builders: {ran}"
    deps = [d for d in code_deps(STAGES[stage]) if d.startswith("src/kshd_world")]
    assert deps == [], f"dvc.yaml stage {stage!r} depends on builders: {deps}"
    params = STAGES[stage].get("params", [])
    assert not [p for p in params if str(p).split(".")[0] == "tiny"], params


def test_the_walk_finds_what_hand_written_lists_missed():
    """Hand-written lists once let train write validation images through evaluation code
    without depending on it, dataset import captioning without it, and evaluate lack the LoRA
    files and checkpoints: the walk names each such gap."""
    old = {
        "train": ["src/kshd/stages/train.py", "src/kshd/training/loop.py"],
        "dataset": ["src/kshd/stages/dataset.py", "src/kshd/data/dataset.py"],
        "evaluate": ["src/kshd/stages/evaluate.py", "src/kshd/evaluation/evaluate.py"],
    }
    assert "src/kshd/training/components.py" in uncovered(stage_files("train"), old["train"])
    assert "src/kshd/data/captioning.py" in uncovered(stage_files("dataset"), old["dataset"])
    lacking = uncovered(stage_files("evaluate"), old["evaluate"])
    assert {"src/kshd/adapters/lora.py", "src/kshd/training/checkpoints.py"} <= set(lacking)


def test_training_reruns_for_no_metric_and_no_app_code():
    """Editing a metric, the report or the app (its request checks, engine, GUI) must not rerun a
    50-epoch training: the train stage draws its validation images through the evaluation's
    sampling alone, and reaches (and depends on) no metric, report or `drawing/` file."""
    reached = {str(f.relative_to(ROOT)) for f in stage_files("train")}
    deps = set(code_deps(STAGES["train"]))
    outside = ("metrics.py", "evaluate.py", "report.py", "sketch.py", "references.py")
    for name in [*(f"src/kshd/evaluation/{f}" for f in outside), "src/kshd/drawing/"]:
        assert not [n for n in reached | deps if n.startswith(name)], name
    assert "src/kshd/evaluation/sampling.py" in reached  # the validation images, as the app draws


def test_dvc_adds_nothing_to_the_committed_gitignores(tmp_path):
    """A stage's cached outputs go into the .gitignore beside them (DVC adds `/<name>` when git
    does not ignore it yet): the committed .gitignores already hold every one, so `make demo`
    or a first `dvc repro` leaves `git status` clean. Asked of git through DVC's own scm, over
    the committed (staged) .gitignore files laid out in an empty repository."""
    import subprocess

    from dvc.repo import Repo
    from scmrepo.git import Git

    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout  # fmt: skip
    for name in git("ls-files", "*.gitignore").split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(git("show", f":{name}"), encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with Repo(str(ROOT)) as repo:
        outs = [Path(o.fs_path).relative_to(ROOT) for o in repo.index.outs if o.use_scm_ignore]
    assert Path("data/dataset") in outs and Path("models/lora") in outs
    scm = Git(str(tmp_path))
    added = [str(out) for out in outs if not scm.is_ignored(str(tmp_path / out))]
    assert added == []
