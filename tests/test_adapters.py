"""The adapter seam: a kind registered from one file (here, this test's) trains through the
loop, saves its files, resumes from its checkpoints and draws in the app's engine at a strength
(0 = the base exactly), with no edit to the engine, the loop or the stages; the built-in kinds'
files say what they are as kohya writes it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from kshd.adapters.base import PARTS, Adapter
from kshd.adapters.files import DIFFUSERS_FILE, save_adapter
from kshd.adapters.registry import build_adapter, register
from kshd.adapters.weights import open_weights
from kshd.config.compose import defaults
from kshd.config.fill import register_variant, variants
from kshd.config.schema_adapters import AdapterSettings
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request
from kshd.training.checkpoints import STATE, complete_checkpoints
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, train_lora

from .conftest import ROOT
from .helpers.lora_files import TINY_INFO, make_adapter, randomize_lora_b

DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip


@register_variant(AdapterSettings, "gain")
@dataclass(frozen=True)
class GainSettings(AdapterSettings):
    """A throwaway kind's settings: a key of its own beside the common ones."""

    init: float


class GainLayer(torch.nn.Module):
    """A scale-only adapter layer: a linear layer's outputs times (1 + strength x gain), one
    trainable gain per output channel. It follows peft's layer protocol, as the engine merges."""

    def __init__(self, base: torch.nn.Linear, init: float):
        super().__init__()
        self.base_layer = base
        self.gain = torch.nn.Parameter(torch.full((base.out_features,), float(init)))
        self.scale, self.enabled, self.merged = 1.0, True, False

    def _factor(self) -> torch.Tensor:
        return (1 + self.scale * self.gain).to(self.base_layer.weight.dtype)[:, None]

    def forward(self, x, *args, **kwargs):
        if self.merged or not self.enabled:
            return self.base_layer(x)
        return F.linear(x, self.base_layer.weight * self._factor(), self.base_layer.bias)

    def get_base_layer(self) -> torch.nn.Linear:
        return self.base_layer

    def set_scale(self, name: str, scale: float) -> None:
        self.scale = scale

    def merge(self, adapter_names=None) -> None:
        self.base_layer.weight.mul_(self._factor())
        self.merged = True

    def unmerge(self) -> None:  # inexact: the engine puts the saved base weights back
        self.base_layer.weight.div_(self._factor())
        self.merged = False


def _wrap(model, path: str, init: float) -> GainLayer:
    parent, _, child = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    layer = GainLayer(getattr(owner, child), init)
    setattr(owner, child, layer)
    return layer


@register
class GainAdapter(Adapter):
    """The throwaway kind: not peft, its own file format (only a kohya-place file: diffusers
    reads no such thing), claimed by its `ss_network_module`."""

    kind = "gain"
    network_module = "tests.gain"

    def inject(self, model, text_encoder: bool = False) -> None:
        s = self.settings
        targets = tuple(s.text_encoder_target_modules if text_encoder else s.target_modules)
        model.requires_grad_(False)
        found = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                 and (n in targets or n.endswith(tuple(f".{t}" for t in targets)))]  # fmt: skip
        for path in found:
            _wrap(model, path, s.init)

    def adapted(self, model) -> bool:
        return any(True for _ in self.layers(model))

    def model_tensors(self, model) -> dict[str, torch.Tensor]:
        return {f"{n}.gain": m.gain.detach().float().cpu().clone() for n, m in self.layers(model)}

    def load_model_tensors(self, model, state) -> None:
        with torch.no_grad():
            for name, layer in self.layers(model):
                layer.gain.copy_(state[f"{name}.gain"])

    def kohya_tensors(self, state, sdxl, unet_config) -> dict[str, torch.Tensor]:
        return dict(state)

    @classmethod
    def claims(cls, keys, metadata) -> bool:
        return metadata.get("ss_network_module") == cls.network_module

    @classmethod
    def attach(cls, pipe, weights, name: str) -> None:
        for part in PARTS:
            if getattr(pipe, part, None) is not None:
                cls.attach_unet(pipe, getattr(pipe, part), weights, name, part)

    @classmethod
    def attach_unet(cls, pipe, unet, weights, name: str, part: str = "unet") -> None:
        state = load_file(str(weights)) if isinstance(weights, Path) else weights
        with torch.no_grad():
            for key, gain in state.items():
                if key.startswith(f"{part}."):
                    path = key[len(part) + 1 :].removesuffix(".gain")
                    _wrap(unet, path, 0.0).gain.copy_(gain)

    @classmethod
    def detach(cls, pipe) -> None:
        for part in PARTS:
            model = getattr(pipe, part, None)
            for path, layer in list(cls.layers(model)) if model is not None else []:
                parent, _, child = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, layer.base_layer)

    @classmethod
    def enable(cls, pipe, on: bool) -> None:
        for part in PARTS:
            model = getattr(pipe, part, None)
            for _, layer in cls.layers(model) if model is not None else []:
                layer.enabled = on

    @classmethod
    def layers(cls, model):
        for name, module in model.named_modules():
            if isinstance(module, GainLayer):
                yield name, module


GAIN = {"kind": "gain", "target_modules": ["to_q", "to_v", "to_out.0"],
        "text_encoder_target_modules": ["q_proj"], "init": 0.0}  # fmt: skip


def _pixels(engine: Engine, scale: float) -> np.ndarray:
    out = engine.generate(Request("a girl", lora_scale=scale, **DRAW), save=False)
    return np.asarray(out.images[0], dtype=np.int16)


def test_a_kind_from_one_file_trains_resumes_saves_and_draws_at_a_strength(
    tiny_models, sample_split, random_lora, tmp_path
):
    """The proof of the seam: everything this kind does is in this file."""
    s = defaults("train", resolution=64, batch_size=2, epochs=1, learning_rate=5e-2, seed=3,
                 rank=4, alpha=4, adapter=GAIN)  # fmt: skip
    assert type(s.adapter) is GainSettings and s.defining()["adapter"]["kind"] == "gain"
    policy = CheckpointPolicy(tmp_path / "ckpt", 1, None, True, "gain")
    c = load_components(str(tiny_models["sd"]))
    straight = train_lora(c, sample_split, s, ckpt=policy)
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    trained = adapter.tensors(c.unet, c.text_encoder)
    assert trained and all(k.startswith("unet.") and k.endswith(".gain") for k in trained)
    assert all(t.abs().max() > 0 for t in trained.values())  # every gain learned something
    # resumed from its newest checkpoint (step 4 of 5), it ends where the straight run ended
    shutil.rmtree(tmp_path / "ckpt" / "checkpoint-5")
    again = load_components(str(tiny_models["sd"]))
    resumed = train_lora(again, sample_split, s, ckpt=policy)
    assert resumed.resumed_from == "checkpoint-4" and straight.steps == resumed.steps == 5
    redone = adapter.tensors(again.unet)
    assert all(torch.equal(redone[k], trained[k]) for k in trained)

    out = tmp_path / "lora"
    out.mkdir()
    shutil.copy(random_lora / DIFFUSERS_FILE, out / DIFFUSERS_FILE)  # a LoRA's, from before
    diffusers_file, kohya_file = save_adapter(out, adapter, TINY_INFO, c.unet, c.text_encoder)
    assert diffusers_file is None and not (out / DIFFUSERS_FILE).exists()  # no stale pairing
    with safe_open(str(kohya_file), "pt") as f:
        assert f.metadata()["ss_network_module"] == "tests.gain"
        assert f.metadata()["ss_network_dim"] == "4"
    assert open_weights(out).adapter is GainAdapter

    limits = defaults("generate.limits")
    settings = EngineSettings(str(tiny_models["sd"]), lora=str(out), device="cpu",
                              outputs_dir=str(tmp_path), limits=limits)  # fmt: skip
    base = _pixels(Engine(replace(settings, lora=None)), 1.0)
    engine = Engine(settings)
    drawn = _pixels(engine, 1.0)
    assert np.abs(drawn - base).max() > 0
    assert np.array_equal(_pixels(engine, 0.0), base)  # strength 0: the base, exactly
    assert np.array_equal(_pixels(engine, 1.0), drawn)  # merged again at 1
    step, checkpoint = complete_checkpoints(tmp_path / "ckpt")[-1]
    assert step == 5
    record = json.loads((checkpoint / STATE).read_text(encoding="utf-8"))["adapter"]
    assert record["kind"] == "gain" and record["settings"]["init"] == 0.0
    engine.set_lora(str(checkpoint))  # its record says its kind: no strength asked
    assert np.array_equal(_pixels(engine, 1.0), drawn)  # the last checkpoint: the same tensors
    engine.set_lora(None)
    assert np.array_equal(_pixels(engine, 1.0), base) and not any(
        GainAdapter.layers(engine.txt2img.unet)
    )


def test_locon_s_kohya_file_records_its_conv_rank_and_alpha(tiny_models, tmp_path):
    """As kohya's train_network.py writes `--network_args conv_dim=... conv_alpha=...` (strings);
    a LoRA's file has no network args (its bytes are as before the seam)."""
    from diffusers import UNet2DConditionModel

    metadata, keys = {}, {}
    for kind in ("lora", "locon"):
        unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
        adapter = make_adapter(4, 2, kind=kind, **({"target_modules": ["to_q"]} if kind == "lora"
                                                   else {}))  # fmt: skip
        adapter.inject(unet)
        randomize_lora_b(unet, seed=1, scale=0.3)
        _, kohya = save_adapter(tmp_path / kind, adapter, TINY_INFO, unet)
        with safe_open(str(kohya), "pt") as f:
            metadata[kind], keys[kind] = f.metadata(), list(f.keys())  # noqa: SIM118
    assert "ss_network_args" not in metadata["lora"]
    assert json.loads(metadata["locon"]["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2"}
    for meta in metadata.values():
        assert (meta["ss_network_module"], meta["ss_network_dim"], meta["ss_network_alpha"]) == (
            "networks.lora", "4", "2")  # fmt: skip
    assert any("_resnets_0_conv1.lora_down" in k for k in keys["locon"])
    assert not any("conv" in k for k in keys["lora"])


def test_every_adapter_yaml_names_a_kind_with_its_settings_and_its_code():
    """conf/train/adapter/<kind>.yaml, the settings class the filler fills and the adapter the
    registry builds agree; the default kind is lora."""
    from kshd.adapters.registry import DEFAULT_KIND, adapter_class

    files = sorted((ROOT / "conf" / "train" / "adapter").glob("*.yaml"))
    assert {p.stem for p in files} >= {"lora", "locon"}
    for path in files:
        settings = defaults("train.adapter", **_node(path))
        assert settings.kind == path.stem and type(settings) is variants(AdapterSettings)[path.stem]
        assert adapter_class(path.stem).kind == path.stem
    assert defaults("train.adapter").kind == DEFAULT_KIND == "lora"


def _node(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))
