"""The config schema: every key in conf/ is a field and every field a key; bad config is one
line naming the key, at load; "defines the result" is marked once and drives the fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import typing
from dataclasses import dataclass

import pytest
import yaml

from kshd.captioners.registry import caption_identity
from kshd.config.compose import compose_conf, defaults
from kshd.config.errors import ConfigError
from kshd.config.fill import as_plain, defining, discriminator, is_variant_base, settings, variants
from kshd.config.schema import ProjectConfig, check, stage_params
from kshd.config.schema_train import TrainSettings
from kshd.data.captioning import with_trigger
from kshd.data.images import IntakeRules, load_image, resize_short_side
from kshd.drawing.engine import EngineSettings
from kshd.drawing.request import CONF_FIELDS, FROM_CONF, Request, conf_request_values
from kshd.evaluation.evaluate import CheckpointCurve
from kshd.evaluation.sampling import SampleSettings
from kshd.training.batches import ItemOptions, make_buckets
from kshd.training.checkpoints import fingerprint
from kshd_world.world import write_world

from .conftest import ROOT

CONF = ROOT / "conf"


def schema_keys(cls: type, prefix: str = "", chosen: dict | None = None) -> set[str]:
    """Dotted keys of a schema; a nested dataclass adds its own, a dict field is one key. A
    variant group adds the keys of the variant `chosen` (a composed config) names, else of all."""
    keys = set()
    for name, hint in typing.get_type_hints(cls).items():
        if is_variant_base(hint):
            node = (chosen or {}).get(name)
            kinds = variants(hint)
            for variant in [kinds[node[discriminator(hint)]]] if node else kinds.values():
                keys |= schema_keys(variant, f"{prefix}{name}.", node)
        elif dataclasses.is_dataclass(hint):
            keys |= schema_keys(hint, f"{prefix}{name}.", (chosen or {}).get(name))
        else:
            keys.add(f"{prefix}{name}")
    return keys


def yaml_keys(node: dict, prefix: str, leaves: set[str]) -> set[str]:
    """Dotted keys of a YAML mapping, stopping at the schema's leaves (e.g. generate.embeddings)."""
    keys = set()
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in leaves:
            keys |= yaml_keys(value, f"{key}.", leaves)
        else:
            keys.add(key)
    return keys


def conf_file_keys(path) -> set[str]:
    """The keys one file of conf/ sets, placed where Hydra puts them."""
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values.pop("defaults", None)
    package = re.search(r"^# @package (\S+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    if package:  # Hydra's package header: _global_ (the root) or a group such as train
        prefix = "" if package[1] == "_global_" else f"{package[1]}."
    else:  # a group's folder (train/adapter/ for train.adapter)
        prefix = "".join(f"{part}." for part in path.parent.relative_to(CONF).parts)
    return yaml_keys(values, prefix, schema_keys(ProjectConfig))


@pytest.mark.parametrize(
    "overrides",
    [[], ["+experiment=demo"], ["caption=none"], ["+experiment=demo", "caption=none"]],
    ids=["base", "demo", "caption-none", "demo-caption-none"],
)
def test_every_composed_key_is_a_field_and_every_field_a_key(overrides, tmp_path):
    """The tree DVC composes (its own params.yaml writer, not this package's filler)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    compose_and_dump(tmp_path / "params.yaml", str(CONF), None, "config", str(ROOT), overrides)
    plain = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    composed = yaml_keys(plain, "", schema_keys(ProjectConfig))
    assert composed == schema_keys(ProjectConfig, chosen=plain)
    assert isinstance(check(plain).train, TrainSettings)
    assert check(plain) == compose_conf(overrides, conf_dir=CONF)


@pytest.mark.parametrize(
    "path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF))
)
def test_every_key_of_every_conf_file_maps_to_a_field(path):
    keys = conf_file_keys(path)
    deliberately_empty = path.read_text(encoding="utf-8").rstrip().endswith("{}")
    assert keys or deliberately_empty, f"{path} sets no keys"
    assert keys <= schema_keys(ProjectConfig), keys - schema_keys(ProjectConfig)


@dataclass(frozen=True)
class Inner:
    size: int


@dataclass(frozen=True)
class Outer:
    name: str
    ratio: float
    seeds: tuple[int, ...]
    rgb: tuple[int, int, int]
    limit: int | None
    inner: Inner


GOOD = {"name": "a", "ratio": 1, "seeds": [1, 2], "rgb": [0, 0, 0], "limit": None, "inner": {}}


def test_the_filler_types_lists_as_tuples_and_fills_nested_groups():
    value = settings({**GOOD, "inner": {"size": 3}}, Outer, "g")
    assert value == Outer("a", 1, (1, 2), (0, 0, 0), None, Inner(3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nmae": "a"}, r"^config key `g\.nmae` is unknown: did you mean `g\.name`\?"),
        ({"inner": {"size": 1, "colour": 2}}, r"`g\.inner\.colour` is unknown"),
        ({"inner": {}}, r"^config key `g\.inner\.size` is missing: add it to conf/"),
        ({"name": 3}, r"`g\.name` = 3 is not valid: expected text"),
        ({"ratio": True}, r"`g\.ratio` = True is not valid: expected a number"),
        ({"seeds": [1, "x"]}, r"`g\.seeds\[1\]` = 'x' is not valid: expected a whole number"),
        ({"rgb": [0, 0]}, r"`g\.rgb` = \[0, 0\] is not valid: expected a list of 3 values"),
        ({"limit": 1.5}, r"`g\.limit` = 1\.5 is not valid: expected a whole number"),
        ({"name": None}, r"`g\.name` = None is not valid: expected text \(null is not accepted"),
    ],
)
def test_the_filler_names_the_full_key_of_unknown_missing_and_mistyped_values(change, message):
    values = {**GOOD, "inner": {"size": 1}, **change}
    with pytest.raises(ConfigError, match=message) as err:
        settings(values, Outer, "g")
    assert "\n" not in str(err.value)


def test_a_group_missing_a_key_names_it():
    tree = as_plain(compose_conf([], conf_dir=CONF))
    del tree["caption"]["trigger_position"]
    with pytest.raises(ConfigError, match=r"`caption\.trigger_position` is missing"):
        check(tree)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("seed=x", "seed"),
        ("data.raw_dir=null", "data.raw_dir"),
        ("output.lora_dir=[a]", "output.lora_dir"),
        ("tiny.build=maybe", "tiny.build"),
        ("model.pretrained=null", "model.pretrained"),
        ("prepare.background=[0,0,300]", "prepare.background"),
        ("caption.trigger_position=middle", "caption.trigger_position"),
        ("caption.top_p=0", "caption.top_p"),
        ("dataset.holdout_fraction=1.5", "dataset.holdout_fraction"),
        ("train.epochs=0", "train.epochs"),
        ("evaluate.best_by=beauty", "evaluate.best_by"),
        ("evaluate.checkpoint_every=0", "evaluate.checkpoint_every"),
        ("generate.resize_mode=squash", "generate.resize_mode"),
        ("generate.limits.max_steps=many", "generate.limits.max_steps"),
        ("generate.gui.port=http", "generate.gui.port"),
        ("tracking.mode=bogus", "tracking.mode"),
        ("+train.epohcs=3", "train.epohcs"),
        ("train.epohcs=3", "train.epohcs"),
    ],
)
def test_a_bad_value_in_any_group_fails_at_load_in_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        compose_conf([override], conf_dir=CONF)
    assert f"`{key}`" in str(err.value) or f"'{key}'" in str(err.value)
    assert "\n" not in str(err.value)


def config_classes(cls: type = ProjectConfig) -> set[type]:
    """Every dataclass of the schema, nested ones and each variant of a variant group included."""
    found = {cls}
    for hint in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(hint):
            found |= config_classes(hint)
            for variant in variants(hint).values():  # a variant group's every kind
                found |= config_classes(variant)
    return found


@pytest.mark.parametrize(
    "cls",
    sorted(
        config_classes() | {SampleSettings, IntakeRules, CheckpointCurve, ItemOptions},
        key=lambda c: c.__name__,
    ),
    ids=lambda c: c.__name__,
)
def test_no_config_field_has_a_default_in_code(cls):
    """Defaults live in conf/ alone (kshd.config.compose.defaults composes them)."""
    with_default = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == [], f"{cls.__name__} has defaults in code: {with_default}"


@pytest.mark.parametrize(
    ("function", "argument", "expected"),
    [
        (load_image, "rules", inspect.Parameter.empty),
        (resize_short_side, "upscale", inspect.Parameter.empty),
        (with_trigger, "position", inspect.Parameter.empty),
        (make_buckets, "step", inspect.Parameter.empty),
        (make_buckets, "max_aspect", inspect.Parameter.empty),
        (write_world, "trigger", None),  # None: conf's caption.trigger_phrase, read when called
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_library_functions_take_conf_values_from_their_caller(function, argument, expected):
    """A conf/ value (prepare's rules and upscale, caption.trigger_position and trigger_phrase)
    is not copied into a default argument."""
    default = inspect.signature(function).parameters[argument].default
    assert default is expected, f"{function.__name__}({argument}={default!r})"


def test_a_library_request_and_engine_take_their_defaults_from_conf():
    """`Request("a girl")` and `EngineSettings(model)` fill what they leave out from conf/'s
    generate group: its values, at one place, never a literal of their own."""
    g = defaults("generate")
    req = Request("a girl", steps=5)
    assert req.steps == 5 and req.image is None
    assert req.cfg_scale == g.guidance_scale and req.negative_prefix == g.negative_prefix
    assert {n: getattr(req, n) for n in CONF_FIELDS if n != "steps"} == {
        n: v for n, v in conf_request_values().items() if n != "steps"
    }
    for f in dataclasses.fields(Request):
        # None = not given (clip_skip: the base's model.clip_skip)
        if f.name not in ("prompt", "image", "control_image", "mask", "clip_skip"):
            assert f.default is FROM_CONF, f"Request.{f.name} has a default of its own"
    assert (req.control_weight, req.control_mode) == (g.control.weight, g.control.mode)
    engine = EngineSettings("some/model", device="cpu")
    assert engine.device == "cpu" and engine.limits == g.limits
    assert engine.outputs_dir == g.outputs_dir and engine.control_models == g.control.models
    assert Request("a", negative_prompt=None).negative_prompt is None  # validation refuses it


def test_settings_made_from_a_group_take_its_fields_by_name(tmp_path, caplog):
    """IntakeRules, ItemOptions, SampleSettings and EngineSettings copy no schema field by hand:
    each field a group has is that group's value (the model's before generate's)."""
    cfg = compose_conf(["+experiment=demo", "train.buckets=true", "model.variant=fp16",
                        f"generate.lora={tmp_path / 'none'}"], conf_dir=CONF)  # fmt: skip
    made = [
        (IntakeRules.from_settings(cfg.prepare), (cfg.prepare,),
         {"limit_key": "prepare.max_pixels"}),
        (ItemOptions.from_settings(cfg.train, keep_tag="t"), (cfg.train,),
         {"keep_tag": "t", "buckets": tuple(make_buckets(cfg.train.resolution,
          cfg.train.bucket_step, cfg.train.bucket_max_aspect))}),
        (SampleSettings.from_settings(cfg.evaluate, "t"), (cfg.evaluate,), {"trigger_phrase": "t"}),
        (EngineSettings.from_settings(cfg.model, cfg.generate), (cfg.model, cfg.generate),
         {"lora": None, "embeddings": tuple(cfg.generate.embeddings.items()),
          "control_models": cfg.generate.control.models,
          "inpaint_model": cfg.generate.inpaint.model, "trained_lora": cfg.generate.lora,
          "checkpoints_dir": cfg.generate.gui.checkpoints_dir,
          "lora_dirs": cfg.generate.gui.lora_dirs, "checkpoint_strength": None}),
    ]  # fmt: skip
    for value, groups, own in made:
        expected = {
            f.name: next(getattr(g, f.name) for g in groups if hasattr(g, f.name))
            for f in dataclasses.fields(value)
            if f.name not in own
        }
        assert dataclasses.asdict(value) == dataclasses.asdict(type(value)(**expected, **own))
    assert made[3][0].variant == "fp16" and "generate.lora" in caplog.text  # missing: the base


def test_defaults_compose_conf_and_check_the_overrides():
    s = defaults("train", epochs=3)
    assert s == dataclasses.replace(compose_conf([], conf_dir=CONF).train, epochs=3)
    adapter = defaults("train.adapter", target_modules=["to_q"])
    assert adapter == dataclasses.replace(s.adapter, target_modules=("to_q",))
    assert defaults("generate.limits", max_side=64).max_side == 64
    assert defaults("tracking", group="mine").group == "mine"  # any key, `group` too
    assert defaults("train") is not defaults("train")  # a fresh value each call
    with pytest.raises(ConfigError, match=r"^config key `train\.epohcs` is unknown"):
        defaults("train", epohcs=3)
    with pytest.raises(ConfigError, match=r"^config key `train\.epochs` = 'x' is not valid"):
        defaults("train", epochs="x")
    with pytest.raises(ConfigError, match=r"`train\.epochs` = 0 is not valid"):
        defaults("train", epochs=0)  # validated like a key of conf/
    with pytest.raises(ConfigError, match=r"config group `trian` is unknown"):
        defaults("trian")


def test_the_train_fingerprint_hashes_the_marked_fields_as_before():
    marked = set(defaults("train").defining())
    assert marked == {f.name for f in dataclasses.fields(TrainSettings)} - {
        "launcher", "checkpointing_steps", "checkpoints_total_limit", "resume",
        "dataloader_num_workers", "gradient_checkpointing",
        "compile", "compile_mode", "compile_backend",
        "validation_prompt",
        "validation_negative_prompt", "validation_positive_prefix", "validation_negative_prefix",
        "validation_sampler", "validation_epochs", "validation_seeds", "validation_steps",
        "prior_loss_weight",  # in the dataset part of the fingerprint, with regularization
        "masked_loss",  # in the fingerprint only when on (tests/test_masked_loss.py)
        "adapter",  # a LoRA's targets under the names they had as train.* keys (below)
        "optimizer",  # AdamW's keys under the names they had as train.* keys
        "ema_decay", "ema_every", "ema_warmup",  # as one `ema` entry, only with an EMA (below)
    } | {"target_modules", "text_encoder_target_modules"} | {
        "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "use_8bit_adam",
    }  # fmt: skip
    # the value before the marking: checkpoints of earlier runs still resume
    s = defaults("train")
    assert fingerprint(settings=s.defining()) == "cb6541ea5ad123159fc2"
    changed = dataclasses.replace(s, validation_steps=3, resume=False)
    assert changed.defining() == s.defining()
    assert dataclasses.replace(s, rank=8).defining() != s.defining()
    narrower = dataclasses.replace(s.adapter, target_modules=("to_q",))
    assert dataclasses.replace(s, adapter=narrower).defining() != s.defining()
    ema = dataclasses.replace(s, ema_decay=0.99).defining()
    assert ema == s.defining() | {"ema": [0.99, s.ema_every, s.ema_warmup]}
    assert dataclasses.replace(s, ema_every=5).defining() == s.defining()  # no EMA: as before


def test_the_adapter_s_kind_is_in_the_fingerprint_except_between_lora_and_locon():
    """LoCon trains what a LoRA with its targets trains (the demo's checkpoints from when its
    targets were train.* keys resume as LoCon); another kind on the same targets is another run."""
    from kshd.config.schema_adapters import AdapterSettings

    lora, locon = defaults("train.adapter"), defaults("train.adapter", kind="locon")
    assert (
        locon.fingerprint()
        == lora.fingerprint()
        == {
            "target_modules": lora.target_modules,
            "text_encoder_target_modules": lora.text_encoder_target_modules,
        }
    )
    other = AdapterSettings("other", lora.target_modules, lora.text_encoder_target_modules)
    assert other.fingerprint() == {"adapter": {"kind": "other", **lora.fingerprint()}}
    demo = compose_conf(["+experiment=demo"], conf_dir=CONF).train
    assert demo.adapter.kind == "locon"
    assert fingerprint(settings=demo.defining()) == "6887f7ce47d6648934de"  # as before


def test_the_caption_cache_key_hashes_the_marked_fields_as_before():
    """BLIP-2's cache identity is the hash of its marked fields in their old order, so captions
    cached before captioners had kinds keep hitting."""
    s = defaults("caption")
    assert list(defining(s)) == [
        "model", "prompt", "do_sample", "temperature", "top_p", "repetition_penalty",
        "max_new_tokens", "seed",
    ]  # fmt: skip
    old = repr(tuple(defining(s).values())).encode()
    assert caption_identity(s) == hashlib.sha256(old).hexdigest()[:16] == "6546cb712542aec5"
    unchanged = dataclasses.replace(s, batch_size=1, trigger_phrase="x", trigger_position="start")
    assert caption_identity(unchanged) == caption_identity(s)
    assert caption_identity(dataclasses.replace(s, temperature=0.5)) != caption_identity(s)


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("stage", ["prepare", "caption", "dataset", "train", "evaluate"])
def test_each_stage_s_dvc_params_are_the_keys_its_marks_name(stage):
    """dvc.yaml lists exactly the keys that change the stage's outputs, as the fields' marks
    (DEFINES_RESULT, changes(...)) say: no whole group, so a worker count reruns nothing; a
    variant group (`caption`, whose keys differ by kind) is one param of its own stage alone."""
    listed = dvc_stages()[stage].get("params", [])
    assert sorted(listed) == sorted(stage_params(stage)), (
        f"dvc.yaml {stage}.params: add {sorted(set(stage_params(stage)) - set(listed))}, "
        f"remove {sorted(set(listed) - set(stage_params(stage)))}"
    )


def test_the_sweep_keys_rerun_training_and_runtime_keys_rerun_nothing():
    train = set(stage_params("train"))
    assert {"train.epochs", "train.batch_size", "train.learning_rate", "model.pretrained"} <= train
    assert {"train.validation_prompt", "caption.trigger_phrase"} <= train  # its outputs change
    runtime = {"train.dataloader_num_workers", "train.checkpointing_steps", "train.resume",
               "train.gradient_checkpointing", "caption.batch_size", "train.launcher",
               "train.compile", "train.compile_mode", "train.compile_backend"}  # fmt: skip
    every = {key for stage in dvc_stages() for key in stage_params(stage)}
    assert not runtime & every
    # the caption group as a whole reruns its stage alone, which then captions nothing anew
    # (tests/test_captioners.py): its batch size changes no caption and no later stage's input
    assert [s for s in dvc_stages() if "caption" in stage_params(s)] == ["caption"]
    # of the app's settings only the textual inversions change what evaluation draws
    app_keys = {k for k in every if k.split(".")[0] in ("tracking", "generate", "tiny")}
    assert app_keys == {"generate.embeddings"}
