"""A model that cannot be had is one line naming its config key and the ways out, before any work.

The suite runs with HF_HUB_OFFLINE=1 and an empty Hub cache, so a plain hub id is unreachable
here exactly as on a user's machine without network.
"""

from __future__ import annotations

import socket

import pytest

from kshd.models.source import ModelSourceError, check_model_source

from .conftest import ROOT
from .helpers.inprocess import kshd_here
from .stage_project import noise_drawings, project_cfg

NOWHERE = "nobody-here/no-such-model"


def _fake_cache(root, repo_id: str, marker: str) -> None:
    """The Hub cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/<files>."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / marker).write_text("{}")


def test_local_folders_must_exist_and_hold_a_model(tmp_path):
    with pytest.raises(ModelSourceError, match="`model.pretrained`.*no such folder"):
        check_model_source(str(tmp_path / "nope"), "model.pretrained", "model_index.json")
    with pytest.raises(ModelSourceError, match="`model.pretrained`.*no model_index.json"):
        check_model_source(str(tmp_path), "model.pretrained", "model_index.json")
    (tmp_path / "model_index.json").write_text("{}")
    check_model_source(str(tmp_path), "model.pretrained", "model_index.json")


def test_offline_hub_id_passes_only_when_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSourceError) as err:
        check_model_source(NOWHERE, "caption.model")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"config key `caption.model` = '{NOWHERE}'")
    for way_out in ("local folder", "network", "HF_HUB_OFFLINE", "+experiment=demo"):
        assert way_out in message
    _fake_cache(tmp_path, NOWHERE, "config.json")
    check_model_source(NOWHERE, "caption.model")  # cached: no error, no network
    with pytest.raises(ModelSourceError, match="model.pretrained"):  # cached, but not a pipeline
        check_model_source(NOWHERE, "model.pretrained", "model_index.json")


def test_unreachable_hub_is_named_when_not_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSourceError, match=r"evaluate.clip_model.*cannot be reached"):
        check_model_source(NOWHERE, "evaluate.clip_model")


def test_kshd_generate_says_one_line_naming_the_key(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["generate", "--prompt", "a girl", f"model.pretrained={NOWHERE}", "generate.device=cpu"]
    proc = kshd_here(argv, capsys, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "model.pretrained" in ln]
    assert line.startswith("kshd generate: config key `model.pretrained`") and "demo" in line


@pytest.mark.parametrize(
    ("stage", "override", "key"),
    [
        ("train", "model.pretrained", "model.pretrained"),
        ("evaluate", "model.pretrained", "model.pretrained"),
        ("evaluate", "evaluate.clip_model", "evaluate.clip_model"),
        ("evaluate", "evaluate.dino_model", "evaluate.dino_model"),
        ("caption", "caption.model", "caption.model"),
    ],
)
def test_each_stage_checks_its_models_first(
    tmp_path, monkeypatch, tiny_models, stage, override, key
):
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    cfg = project_cfg(tiny_models, [f"{override}={NOWHERE}"])
    if stage == "caption":  # caption reads prepare's report; the captioner is the first model
        from kshd.stages import prepare

        (tmp_path / "raw").mkdir()
        noise_drawings(tmp_path / "raw", 2)
        prepare.run(cfg)
    module = importlib.import_module(f"kshd.stages.{stage}")
    with pytest.raises(ModelSourceError, match=f"`{key}`"):
        module.run(cfg)  # no dataset, no LoRA here: had it worked first, another error came


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_stage_never_builds_the_demo_models_and_says_how_to(
    tmp_path, monkeypatch, tiny_models, stage
):
    """Stages only check the folders (so a builder edit reruns none); `make demo` builds them."""
    import importlib

    monkeypatch.chdir(tmp_path)
    cfg = project_cfg(tiny_models, ["model.pretrained=${tiny.dir}/sd", "tiny.build=true"])
    with pytest.raises(ModelSourceError) as err:
        importlib.import_module(f"kshd.stages.{stage}").run(cfg)
    assert str(err.value) == (
        "model.pretrained: models/tiny/sd does not exist; run `make demo` "
        "(or `kshd tiny-models models/tiny`) to build the demo's tiny models."
    )
    assert not (tmp_path / "models").exists()  # nothing built


def test_a_queued_copy_loads_the_workspaces_local_models(tmp_path, monkeypatch):
    """A queued experiment's temporary copy lacks git-ignored model folders: a relative one
    missing there is linked to the workspace's (DVC_ROOT); hub ids stay as they are."""
    from kshd.config.compose import compose_conf, with_values
    from kshd.stages import resolve_models

    workspace, copy = tmp_path / "repo", tmp_path / "repo/.dvc/tmp/exps/tmp1"
    (workspace / "models/tiny/sd").mkdir(parents=True)
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    conf = compose_conf([], conf_dir=ROOT / "conf")
    cfg = with_values(conf, {"model.pretrained": "models/tiny/sd", "caption.model": NOWHERE})
    monkeypatch.delenv("DVC_ROOT", raising=False)
    resolve_models(cfg)
    assert cfg.model.pretrained == "models/tiny/sd"  # a hand run: the working dir
    assert not (copy / "models").exists()
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    (workspace / "models/tiny/sd/config.json").write_text("{}")
    resolve_models(cfg)
    resolve_models(cfg)  # the next stage of the same copy
    # the key keeps its value (the caption cache key and the LoRA metadata name it), the
    # folder it names is the workspace's
    assert cfg.model.pretrained == "models/tiny/sd"
    assert (copy / "models/tiny/sd/config.json").read_text() == "{}"
    assert (copy / "models/tiny/sd").resolve() == (workspace / "models/tiny/sd").resolve()
    assert cfg.caption.model == NOWHERE
    # a single-file base and the folder of its configs, linked the same way
    (workspace / "models/base.safetensors").write_bytes(b"weights")
    file = with_values(conf, {"model.pretrained": "models/base.safetensors",
                              "model.single_file_config": "models/tiny/sd"})  # fmt: skip
    resolve_models(file)
    assert (copy / "models/base.safetensors").read_bytes() == b"weights"
    assert file.model.pretrained == "models/base.safetensors"


def test_the_demo_builds_its_models_in_the_project_before_any_stage(tmp_path):
    """`make demo` and `kshd sweep --demo` build the tiny models where the demo config names
    them (tiny.dir, under the project), a sweep's comma lists left out of that config."""
    import shutil

    from kshd_world.demo import demo_models

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    demo_models(tmp_path, ["+experiment=demo", "train.epochs=1,2", "tiny.dir=built"])
    for name, marker in (("sd", "model_index.json"), ("blip2", "config.json")):
        check_model_source(str(tmp_path / "built" / name), name, marker)
    assert not (tmp_path / "models").exists()
