"""The config schema: every key in conf/ is a field and every field a key; bad config is one
line naming the key, at load; "defines the result" is marked once and drives the fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass

import pytest
import yaml
from omegaconf import OmegaConf

from kshd.config import ConfigError, compose_conf, defining, settings
from kshd.data.captioning import CaptionSettings
from kshd.drawing.request import Limits
from kshd.schema import ProjectConfig, check, group
from kshd.training.checkpoints import fingerprint
from kshd.training.settings import TrainSettings

from .conftest import ROOT

CONF = ROOT / "conf"


def schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted keys of a schema; a nested dataclass adds its own, a dict field is one key."""
    keys = set()
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys |= schema_keys(hint, f"{prefix}{name}.")
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
    group_dir = path.parent.name
    global_package = "# @package _global_" in path.read_text(encoding="utf-8")
    prefix = "" if path.parent == CONF or global_package else f"{group_dir}."
    return yaml_keys(values, prefix, schema_keys(ProjectConfig))


@pytest.mark.parametrize("overrides", [[], ["+experiment=demo"]], ids=["base", "demo"])
def test_every_composed_key_is_a_field_and_every_field_a_key(overrides):
    cfg = compose_conf(overrides, conf_dir=CONF)
    plain = OmegaConf.to_container(cfg, resolve=True)
    composed = yaml_keys(plain, "", schema_keys(ProjectConfig))
    assert composed == schema_keys(ProjectConfig)
    assert isinstance(check(cfg).train, TrainSettings)


@pytest.mark.parametrize(
    "path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF))
)
def test_every_key_of_every_conf_file_maps_to_a_field(path):
    keys = conf_file_keys(path)
    assert keys, f"{path} sets no keys"
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
    cfg = compose_conf([], conf_dir=CONF)
    OmegaConf.set_struct(cfg, False)
    del cfg.caption["trigger_position"]
    with pytest.raises(ConfigError, match=r"`caption\.trigger_position` is missing"):
        check(cfg)


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


def test_groups_without_a_runtime_class_have_no_defaults_in_code():
    """Their defaults live in conf/ only."""
    for name, cls in typing.get_type_hints(ProjectConfig).items():
        if not dataclasses.is_dataclass(cls) or cls in (TrainSettings, CaptionSettings):
            continue
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
                continue  # generate.limits: Limits, checked below
            assert f.default is dataclasses.MISSING, f"{name}.{f.name} has a default in code"


@pytest.mark.parametrize(("name", "cls"), [("train", TrainSettings), ("caption", CaptionSettings)])
def test_python_defaults_of_runtime_classes_equal_conf_or_are_off(name, cls):
    """A library caller's `TrainSettings(epochs=1)` gets conf/'s values, or the feature off
    (no validation sampling): never a third value."""
    conf = group(compose_conf([], conf_dir=CONF), name)
    for f in dataclasses.fields(cls):
        default = f.default
        if default is dataclasses.MISSING:
            continue
        assert default == getattr(conf, f.name) or default in ("", 0), f"{name}.{f.name}"


def test_limits_defaults_equal_conf():
    conf = group(compose_conf([], conf_dir=CONF), "generate").limits
    assert Limits() == conf


def test_the_train_fingerprint_hashes_the_marked_fields_as_before():
    marked = set(TrainSettings().defining())
    assert marked == {f.name for f in dataclasses.fields(TrainSettings)} - {
        "launcher", "checkpointing_steps", "checkpoints_total_limit", "resume",
        "dataloader_num_workers", "gradient_checkpointing", "validation_prompt",
        "validation_negative_prompt", "validation_positive_prefix", "validation_negative_prefix",
        "validation_sampler", "validation_epochs", "validation_seeds", "validation_steps",
    }  # fmt: skip
    # the value before the marking: checkpoints of earlier runs still resume
    assert fingerprint(settings=TrainSettings().defining()) == "cb6541ea5ad123159fc2"
    changed = dataclasses.replace(TrainSettings(), validation_steps=3, resume=False)
    assert changed.defining() == TrainSettings().defining()
    assert dataclasses.replace(TrainSettings(), rank=8).defining() != TrainSettings().defining()


def test_the_caption_cache_key_hashes_the_marked_fields_as_before():
    s = CaptionSettings()
    assert list(defining(s)) == [
        "model", "prompt", "do_sample", "temperature", "top_p", "repetition_penalty",
        "max_new_tokens", "seed",
    ]  # fmt: skip
    old = repr(tuple(defining(s).values())).encode()
    assert s.fingerprint() == hashlib.sha256(old).hexdigest()[:16] == "6546cb712542aec5"
    unchanged = dataclasses.replace(s, batch_size=1, trigger_phrase="x", trigger_position="start")
    assert unchanged.fingerprint() == s.fingerprint()
    assert dataclasses.replace(s, temperature=0.5).fingerprint() != s.fingerprint()
