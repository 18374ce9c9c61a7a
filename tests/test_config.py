"""Every config composes; params.yaml is what DVC composes from conf/; bad values are named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from kshd.config.compose import compose_conf, load_params, value_at, with_values, write_params
from kshd.config.errors import ConfigError
from kshd.config.fill import STAGES
from kshd.config.schema import ProjectConfig

from .conftest import ROOT

# every config group, nested ones (train/adapter) included
GROUPS = [str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*") if p.is_dir()]


def test_params_yaml_is_what_dvc_composes(tmp_path):
    from dvc.utils.hydra import compose_and_dump

    GlobalHydra.instance().clear()
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", str(ROOT), [])
    committed = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == committed, (
        "params.yaml drifted from conf/: regenerate it with `kshd compose-params`"
    )


def test_kshd_compose_params_writes_what_dvc_composes_with_the_overrides(tmp_path, monkeypatch):
    from kshd import cli

    GlobalHydra.instance().clear()
    monkeypatch.chdir(ROOT)
    out = tmp_path / "params.yaml"
    with pytest.raises(SystemExit) as code:
        cli.main(["compose-params", "--output", str(out), "train.epochs=3"])
    assert code.value.code == 0
    assert load_params([], out) == compose_conf(["train.epochs=3"], conf_dir=ROOT / "conf")


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_option_of_every_group_composes(group):
    for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
        prefix = "+" if group == "experiment" else ""
        cfg = compose_conf([f"{prefix}{group}={option.stem}"], conf_dir=ROOT / "conf")
        assert isinstance(cfg, ProjectConfig)


def test_defaults_are_the_original_projects_run():
    cfg = compose_conf([], conf_dir=ROOT / "conf")
    assert cfg.data.raw_dir == "data/raw"
    assert cfg.caption.model == "Salesforce/blip2-opt-2.7b"
    assert cfg.caption.trigger_phrase == "drawn by KSH drawing style"
    assert cfg.model.pretrained == "stablediffusionapi/anything-v5"
    t = cfg.train
    assert (t.resolution, t.random_flip, t.batch_size, t.epochs) == (512, True, 1, 50)
    assert (t.learning_rate, t.lr_scheduler, t.lr_warmup_steps) == (1e-4, "cosine", 0)
    assert (t.checkpointing_steps, t.seed) == (10000, 5508)
    assert t.validation_prompt.startswith("drawn by KSH drawing style, an anime girl, blonde hair")
    assert cfg.caption.temperature == 0.8 and cfg.caption.top_p == 0.9
    assert cfg.caption.repetition_penalty == 1.2 and cfg.caption.prompt == "A painting of"


def test_demo_profile_is_tiny_and_offline():
    cfg = compose_conf(["+experiment=demo"], conf_dir=ROOT / "conf")
    assert cfg.data.raw_dir == "data/samples" and cfg.tiny.build
    assert cfg.model.pretrained == "models/world/sd" and cfg.caption.model == "models/tiny/blip2"
    assert cfg.evaluate.clip_model == "models/world/clip"
    assert cfg.caption.overrides == "data/sample_captions.csv"
    assert cfg.train.resolution == 128 and cfg.prepare.resolution == 128  # interpolation resolved
    # LoCon: the linear layers of the transformer blocks and the ResNet convs
    assert cfg.train.adapter.kind == "locon" and {"proj_in", "ff.net.2", "conv1", "conv2"} <= set(
        cfg.train.adapter.target_modules
    )


def test_stage_overrides_reach_the_config(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    cfg = load_params(["train.epochs=3", "train.batch_size=2"], params_file=params)
    assert (cfg.train.epochs, cfg.train.batch_size) == (3, 2)
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_params(["train.epochz=3"], params_file=params)


def test_a_queued_experiment_reads_its_own_params_not_the_parent_repos(tmp_path, monkeypatch):
    """DVC runs a queued experiment in a temp copy but sets DVC_ROOT to the parent repository."""
    parent, copy = tmp_path / "repo", tmp_path / "repo/.dvc/tmp/exps/tmp1"
    copy.mkdir(parents=True)
    write_params(compose_conf(["train.epochs=50"], conf_dir=ROOT / "conf"), parent / "params.yaml")
    write_params(compose_conf(["train.epochs=2"], conf_dir=ROOT / "conf"), copy / "params.yaml")
    monkeypatch.setenv("DVC_ROOT", str(parent))
    monkeypatch.chdir(copy)
    assert load_params().train.epochs == 2


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="params.yaml"):
        load_params([], params_file=Path(tmp_path) / "params.yaml")


@pytest.mark.parametrize(
    ("plus", "typed", "meant"),
    [
        (plus, typed, meant)
        for plus in ("", "+")
        for typed, meant in [
            ("train.epohcs", "train.epochs"),
            ("model.pretrainde", "model.pretrained"),
            ("train.optimizer.betass", "train.optimizer.betas"),
        ]
    ]
    + [("", "trian.epochs", "train.epochs")],  # (+trian.epochs names the group: `trian`)
)
def test_a_misspelt_key_gets_did_you_mean_with_or_without_plus(plus, typed, meant):
    """`train.epohcs=3` is told what `+train.epohcs=3` is told, in one line, whether conf/ or
    params.yaml (a hand run) is composed, not Hydra's bare "not in struct"."""
    for load in (lambda o: compose_conf(o, conf_dir=ROOT / "conf"),
                 lambda o: load_params(o, params_file=ROOT / "params.yaml")):  # fmt: skip
        with pytest.raises(ConfigError) as err:
            load([f"{plus}{typed}=3"])
        text = str(err.value)
        assert text.startswith(f"config key `{typed}` is unknown: did you mean `{meant}`?")
        assert "\n" not in text


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("epochs", 0, "train.epochs"),
        ("batch_size", 0, "train.batch_size"),
        ("resolution", 500, "multiple of 8"),
        ("lr_scheduler", "sometimes", "cosine"),
        ("mixed_precision", "fp8", "bf16"),
    ],
)
def test_bad_train_values_name_the_key(key, value, words):
    with pytest.raises(ConfigError, match=words):
        compose_conf([f"train.{key}={value}"], conf_dir=ROOT / "conf")


def test_a_params_file_missing_a_key_is_one_line_naming_it(tmp_path):
    params = tmp_path / "params.yaml"
    values = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    del values["train"]["epochs"]
    params.write_text(yaml.safe_dump(values), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"`train\.epochs` is missing.*compose-params") as err:
        load_params([], params_file=params)
    assert "\n" not in str(err.value)


def test_the_data_stages_run_in_process_on_the_demo_config(demo_cfg, tmp_path):
    """prepare -> caption -> dataset as `run(cfg)` calls, no subprocess and no params.yaml."""
    import csv

    from datasets import load_from_disk

    from kshd.stages import caption, dataset, prepare

    samples = sorted(p for p in (ROOT / "data" / "samples").iterdir() if p.suffix != ".txt")
    report = prepare.run(demo_cfg)
    assert report.inputs == report.accepted == len(samples) and not report.rejected
    captions = caption.run(demo_cfg)
    with open(demo_cfg.data.info_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(samples) == sum(captions["sources"].values())
    # the tiny random BLIP-2 may say nothing for a drawing (its argmax moves with the thread count);
    # then the text is the trigger phrase alone, as with_trigger makes it
    assert all(r["text"].endswith("drawn by KSH drawing style") for r in rows), rows
    sizes = dataset.run(demo_cfg)
    splits = load_from_disk(demo_cfg.data.dataset_dir)
    assert {k: len(v) for k, v in splits.items()} == sizes
    assert sizes["train"] + sizes["holdout"] == len(samples) and sizes["holdout"] >= 1
    assert (tmp_path / "data" / "cache" / "captions.jsonl").is_file()  # not the repository's


def test_a_stage_stops_at_load_in_one_line_before_any_work(tmp_path, monkeypatch):
    from kshd.stages import prepare

    write_params(compose_conf([], conf_dir=ROOT / "conf"), tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^config key `caption\.trigger_position` = 'middle'"):
        prepare.main(["caption.trigger_position=middle"])
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


@pytest.mark.slow
def test_train_and_evaluate_run_in_process_on_the_demo_config(demo_cfg):
    """The whole pipeline as run(cfg) calls: the LoRA files, metrics and report, in-process."""
    import json

    from kshd.evaluation.evaluate import HEADLINE
    from kshd.stages import caption, dataset, evaluate, prepare, train

    demo_cfg = with_values(
        demo_cfg,
        {
            "train.epochs": 1,
            "train.validation_epochs": 0,
            "evaluate.prompts": ["drawn by KSH drawing style, a cat"],
            "evaluate.seeds": [0],
            "evaluate.lora_scales": [1.0],
            "evaluate.num_inference_steps": 2,
            "evaluate.checkpoints": False,
        },
    )
    for stage in (prepare, caption):
        stage.run(demo_cfg)
    sizes = dataset.run(demo_cfg)
    metrics = train.run(demo_cfg)
    batches = -(-sizes["train"] // demo_cfg.train.batch_size)
    assert (metrics["steps"], metrics["epochs"]) == (batches, 1)
    lora = Path(demo_cfg.output.lora_dir)
    files = {"pytorch_lora_weights.safetensors", "ksh_drawing_style.safetensors"}
    assert {p.name for p in lora.iterdir()} == files  # the adapter's files alone
    train_reports = Path(demo_cfg.output.train_reports_dir)
    assert json.loads((train_reports / "metrics.json").read_text(encoding="utf-8")) == metrics
    assert (train_reports / "loss.csv").read_text(encoding="utf-8").startswith("step,")
    scores = evaluate.run(demo_cfg)
    reports = Path(demo_cfg.output.reports_dir)
    assert json.loads((reports / "metrics.json").read_text(encoding="utf-8")) == scores
    assert set(HEADLINE) <= set(scores) and (reports / "index.html").is_file()
    sketch = {"sketch_structure", "sketch_structure_base", "sketch_style", "sketch_style_gain"}
    assert sketch <= set(scores) and scores["sketch_drawings"] == demo_cfg.evaluate.sketch.drawings
    assert len(list((reports / "sketch").glob("sketch-*.png"))) == scores["sketch_drawings"]
    assert "Sketch to style" in (reports / "index.html").read_text(encoding="utf-8")


def test_a_hand_run_can_choose_config_groups_as_dvc_exp_run_does():
    """`kshd gui +experiment=demo` (make gui) and `model=` presets by hand: a group whose file
    overrides another group (the demo picks model=world) composes from conf/ like DVC."""
    from kshd.config.compose import load_params

    assert load_params(["+experiment=demo"]).model.pretrained == "models/world/sd"
    tiny = load_params(["+experiment=demo", "model=tiny_sdxl", "generate.steps=5"])
    assert tiny.model.pretrained == "models/tiny/sdxl" and tiny.generate.steps == 5
    vpred = load_params(["+experiment=sdxl", "model=noobai_xl_vpred", "memory=gpu_12gb"])
    assert vpred.model.prediction_type == "v_prediction" and vpred.model.zero_terminal_snr
    assert vpred.train.resolution == 1024 and vpred.train.optimizer.kind == "adamw8bit"
    # SDXL ControlNets for the app's sketch to style and the evaluation's sketch section
    assert vpred.evaluate.sketch.controlnet == vpred.generate.control.models["lineart_anime"]
    assert all("sdxl" in v.lower() for v in vpred.generate.control.models.values())
    assert load_params(["train.epochs=3"]).train.epochs == 3  # keys apply to params.yaml
    locon = load_params(["train/adapter=locon", "train.adapter.target_modules=[conv1]"]).train
    assert locon.adapter.kind == "locon" and list(locon.adapter.target_modules) == ["conv1"]


def test_an_adapter_chosen_as_a_key_names_the_group_syntax_in_one_line(tmp_path):
    """`train.adapter=locon` replaces the whole node by a word (Hydra's key syntax): the error
    says to choose the group, `train/adapter=locon`, by hand and in a params file DVC wrote."""
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for compose in (
        lambda: load_params(["train.adapter=locon"], params_file=params),
        lambda: compose_conf(["train.adapter=locon"], conf_dir=ROOT / "conf"),
    ):
        with pytest.raises(
            ConfigError, match=r"`train\.adapter` = 'locon'.*`train/adapter=locon`"
        ) as err:
            compose()
        assert "\n" not in str(err.value)
    with pytest.raises(
        ConfigError, match=r"`train\.adapter\.kind` = 'boft' is not valid: expected one of"
    ):
        compose_conf(["train.adapter.kind=boft"], conf_dir=ROOT / "conf")  # no such kind here
    # a kind that exists, set alone, lacks its own keys: the error names the group syntax
    with pytest.raises(ConfigError, match=r"conv_rank` is missing.*`train/adapter=loha`"):
        compose_conf(["train.adapter.kind=loha"], conf_dir=ROOT / "conf")


def test_a_written_params_file_loads_back_as_the_same_config(tmp_path):
    """write_params (a test's or a bench's project) round-trips every group, variants and all."""
    for overrides in ([], ["+experiment=demo"], ["+experiment=sdxl", "model=noobai_xl_vpred"]):
        cfg = compose_conf(overrides, conf_dir=ROOT / "conf")
        write_params(cfg, tmp_path / "params.yaml")
        assert load_params([], tmp_path / "params.yaml") == cfg


def test_a_typed_config_changes_only_through_the_schema():
    """with_values sets dotted keys on the frozen config, validated as an override is (one
    line naming the key); value_at reads one, a mapping's keys too."""
    cfg = compose_conf([], conf_dir=ROOT / "conf")
    changed = with_values(
        cfg,
        {"train.epochs": 1, "evaluate.seeds": [3, 4], "generate.control.models.mine": "x/mine"},
    )
    assert (changed.train.epochs, changed.evaluate.seeds) == (1, (3, 4))
    assert cfg.train.epochs == 50 and "mine" not in cfg.generate.control.models  # unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.train.epochs = 2
    assert value_at(changed, "generate.control.models.mine") == "x/mine"
    assert value_at(cfg, "evaluate.sketch.controlnet") == cfg.evaluate.sketch.controlnet
    for changes, message in (
        ({"train.epochs": 0}, r"^config key `train\.epochs` = 0 is not valid"),
        ({"train.epohcs": 1}, r"^config key `train\.epohcs` is unknown: did you mean"),
        ({"trian.epochs": 1}, r"^config key `trian\.epochs` is unknown"),
        ({"train.epochs.x": 1}, r"^config key `train\.epochs\.x` is unknown"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            with_values(cfg, changes)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^config key `train\.nothing` is unknown"):
        value_at(cfg, "train.nothing")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_runs_on_the_typed_config_its_main_loaded(stage, tmp_path, monkeypatch):
    """`main(argv)` hands `run` the ProjectConfig of params.yaml and the overrides."""
    import importlib
    import typing

    module = importlib.import_module(f"kshd.stages.{stage}")
    assert typing.get_type_hints(module.run)["cfg"] is ProjectConfig
    write_params(compose_conf([], conf_dir=ROOT / "conf"), tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    given = []
    monkeypatch.setattr(module, "run", given.append)
    module.main(["train.epochs=3"])
    [cfg] = given
    assert isinstance(cfg, ProjectConfig) and cfg.train.epochs == 3


def test_only_the_config_package_imports_omegaconf_or_hydra():
    """Hydra's and OmegaConf's objects stay in kshd/config/: the product and the demo world
    read the typed config."""
    import ast

    config = ROOT / "src" / "kshd" / "config"
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        if config in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in ("omegaconf", "hydra")]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in bad]
    assert found == []


def test_a_library_request_takes_the_defaults_kshd_gui_would_load_there(tmp_path, monkeypatch):
    """`Request("x")` and `EngineSettings(model)` fill what they leave out from the working
    directory's params.yaml, the file `kshd gui` there loads (read again once it changes), and
    without one from the source tree's conf/."""
    import os

    from kshd.drawing.engine import EngineSettings
    from kshd.drawing.request import Request

    conf = compose_conf([], conf_dir=ROOT / "conf")
    monkeypatch.chdir(tmp_path)  # neither params.yaml nor conf/ here
    assert Request("x") == Request.from_settings(conf.generate, "x")
    assert EngineSettings("m").outputs_dir == conf.generate.outputs_dir
    params = tmp_path / "params.yaml"
    assert conf.generate.steps not in (7, 9)
    write_params(with_values(conf, {"generate.steps": 7, "generate.outputs_dir": "mine"}), params)
    gui = Request.from_settings(load_params().generate, "x")  # what `kshd gui` here fills
    assert Request("x").steps == 7 and Request("x") == gui
    assert EngineSettings("m").outputs_dir == "mine"
    write_params(with_values(conf, {"generate.steps": 9}), params)
    later = params.stat().st_mtime_ns + 10**9  # an edit a second later (same size)
    os.utime(params, ns=(later, later))
    assert Request("x").steps == 9
