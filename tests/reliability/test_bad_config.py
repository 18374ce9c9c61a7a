"""Bad config values and bad inputs: one line naming the key (or file) and what is accepted.

Each stage runs as DVC runs it (`python -m kshd.stages.<stage>`: here in the test's process as
`__main__`, and one case in a process of its own), with `model.pretrained` set to a hub id that
is not cached here (HF_HUB_OFFLINE=1): had the stage tried to load a model first, it would have
failed with a hub error instead of the message asserted, so the check provably comes before any
model loads.
"""

from __future__ import annotations

import subprocess

import pytest

from ..helpers.inprocess import stage_main_here
from ..stage_project import make_project, stage_cmd, stage_env

pytestmark = pytest.mark.slow
HUB_ONLY = "model.pretrained=stablediffusionapi/anything-v5"

CASES = [
    # (stage, overrides, words the one-line message must contain)
    ("train", ["train.epochs=-3"], ["train.epochs", "-3", "a whole number >= 1"]),
    ("train", ["train.batch_size=0"], ["train.batch_size", "0", "a whole number >= 1"]),
    ("train", ["train.resolution=500"], ["train.resolution", "500", "multiple of 8"]),
    ("train", ["train.lr_scheduler=sometimes"], ["train.lr_scheduler", "sometimes", "cosine"]),
    (
        "train",
        ["model.pretrained=/no/such/model"],
        ["model.pretrained", "/no/such/model", "Hugging Face id"],
    ),
    ("evaluate", ["model.pretrained=./models/missing"], ["model.pretrained", "no such folder"]),
    (
        "evaluate",
        ["evaluate.style_references=./no/refs"],
        ["evaluate.style_references", "no/refs", "not a folder"],
    ),
    ("prepare", [], ["raw", "no drawings"]),
    ("dataset", [], ["info.csv", "header `image,text`"]),
]


def _project(tmp_path, tiny_models, stage):
    root = make_project(tmp_path / stage, tiny_models, [HUB_ONLY])
    if stage == "dataset":
        (root / "data").mkdir(exist_ok=True)
        (root / "data/info.csv").write_text("file,caption\na.png,a girl\n", encoding="utf-8")
    return root


def _one_line(code: int, stderr: str, words: list[str], root) -> None:
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    [line] = [ln for ln in stderr.splitlines() if " ERROR " in f" {ln} " or "Error:" in ln]
    assert all(w in line for w in words), line
    assert not (root / "models" / "lora").exists()


@pytest.mark.parametrize(("stage", "overrides", "words"), CASES)
def test_bad_value_stops_with_one_line_naming_it(
    tiny_models, tmp_path, capsys, monkeypatch, stage, overrides, words
):
    root = _project(tmp_path, tiny_models, stage)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran = stage_main_here(stage, overrides, capsys, root)
    _one_line(ran.returncode, ran.stderr, words, root)


def test_a_stage_process_exits_2_with_the_line_on_stderr(tiny_models, tmp_path):
    """The same as a shell sees it: the process's exit code and its stderr."""
    stage, overrides, words = CASES[0]
    root = _project(tmp_path, tiny_models, stage)
    env = stage_env() | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        stage_cmd(stage, *overrides),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _one_line(proc.returncode, proc.stderr, words, root)
