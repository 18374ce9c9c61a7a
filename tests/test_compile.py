"""train.compile: the UNet's steps compiled by torch.compile (inductor) train as the eager steps
do, and what is checkpointed, resumed, saved and drawn is the same tensors under the same names.

The compiled runs use torch.compile's `aot_eager` backend (`train.compile_backend`): dynamo
captures the same graphs and AOT autograd traces their backward, as for inductor, but runs them
eagerly. Inductor's first C++ build of the tiny UNet's kernels took 3.5-8.5 minutes on this
2-core machine (its cache then holds them), too long for a suite that runs on clean machines;
`python bench/train.py --compile` measures inductor itself. Each run is made once for the module.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import compose_conf, defaults
from kshd.config.errors import ConfigError
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request
from kshd.training.checkpoints import TENSORS, complete_checkpoints
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, train_lora

from .conftest import ROOT
from .helpers.lora_files import TINY_INFO

# Adam's steps normalise each gradient: an element near zero that rounds otherwise moves its weight
# by a part of the learning rate, so weights agree to a tenth of one step's lr, not to rounding
WEIGHTS = dict(rtol=1e-3, atol=1e-3)
# a constant learning rate: a run stopped early holds the schedule a longer run would
BASE = dict(resolution=64, batch_size=2, max_train_steps=4, learning_rate=1e-2, seed=7,
            lr_scheduler="constant")  # fmt: skip
DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip


def _train(tiny_models, split, root, compile_: bool):
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train", **BASE, compile=compile_, compile_backend="aot_eager")
    result = train_lora(c, split, s, ckpt=CheckpointPolicy(root, 2, None, True, "fp"))
    return c, result, build_adapter(s.adapter, s.rank, s.alpha)


@pytest.fixture(scope="module")
def runs(tiny_models, sample_split, tmp_path_factory) -> dict:
    """The same 4 steps eager and compiled, each checkpointed every 2 steps and saved."""
    out = {}
    for name, compile_ in (("eager", False), ("compiled", True)):
        root = tmp_path_factory.mktemp(name)
        c, result, adapter = _train(tiny_models, sample_split, root / "ckpt", compile_)
        save_adapter(root / "lora", adapter, TINY_INFO, c.unet)
        out[name] = {"root": root, "unet": c.unet, "losses": [h["loss"] for h in result.history]}
    return out


def test_inductor_is_the_default_and_gets_the_mode_other_backends_none(monkeypatch):
    """What users get: inductor (kohya's --dynamo_backend default) in train.compile_mode; a mode
    is inductor's option, so another backend is given none (torch.compile would refuse it)."""
    from accelerate import Accelerator

    from kshd.training import compiled

    s = defaults("train")
    assert (s.compile, s.compile_backend, s.compile_mode) == (False, "inductor", "default")
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    unet = torch.nn.Conv2d(4, 4, 3)
    for backend in ("inductor", "aot_eager"):
        compiled.compile_unet(unet, "max-autotune", backend, Accelerator(cpu=True))
    assert calls == [{"backend": "inductor", "mode": "max-autotune"},
                     {"backend": "aot_eager", "mode": None}]  # fmt: skip
    assert unet.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="`train.compile_backend`") as err:
        compose_conf(["train.compile_backend=tensorrt"], conf_dir=ROOT / "conf")
    assert "\n" not in str(err.value)


def test_an_unknown_compile_mode_fails_at_load_naming_the_key():
    with pytest.raises(ConfigError, match="`train.compile_mode`") as err:
        compose_conf(["train.compile_mode=fastest"], conf_dir=ROOT / "conf")
    assert "\n" not in str(err.value) and "reduce-overhead" in str(err.value)


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one(runs):
    """Compiled and eager steps compute the same losses (to float rounding), the compiled run's
    LoRA learns, and the caller gets the UNet back uncompiled with the trained weights."""
    eager, compiled = runs["eager"], runs["compiled"]
    assert len(compiled["losses"]) == 4 and len(set(compiled["losses"])) == 4
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-4)
    assert type(compiled["unet"]) is UNet2DConditionModel
    trained = {n: p for n, p in compiled["unet"].named_parameters() if "lora_B" in n}
    assert trained and all(p.abs().sum() > 0 for p in trained.values())  # B starts at zero
    reference = dict(eager["unet"].named_parameters())
    for name, p in trained.items():
        torch.testing.assert_close(p, reference[name], **WEIGHTS)


@pytest.mark.slow
def test_a_compiled_run_checkpoints_and_saves_the_eager_names_and_shapes(runs):
    """No `_orig_mod.` in any file: the checkpoints and both adapter files of a compiled run
    hold the tensors an eager run's hold, under the same names, with the same metadata keys."""
    files = [f"ckpt/checkpoint-{step}/{TENSORS}" for step in (2, 4)]
    files += [f"lora/{DIFFUSERS_FILE}", f"lora/{KOHYA_FILE}"]
    for path in files:
        eager, compiled = (load_file(str(runs[n]["root"] / path)) for n in ("eager", "compiled"))
        assert {k: v.shape for k, v in compiled.items()} == {
            k: v.shape for k, v in eager.items()
        }, path
        assert not any("_orig_mod" in k for k in compiled)
    with (
        safe_open(str(runs["eager"]["root"] / "lora" / KOHYA_FILE), "pt") as e,
        safe_open(str(runs["compiled"]["root"] / "lora" / KOHYA_FILE), "pt") as c,
    ):
        assert c.metadata().keys() == e.metadata().keys()


@pytest.mark.slow
def test_a_compiled_run_resumes_its_own_and_an_eager_checkpoint(runs, tiny_models, sample_split):
    """Resumed under compile from step 2 (the compiled run's checkpoint, then the eager run's),
    steps 3 and 4 compute the straight runs' losses and end on their weights."""
    for name in ("compiled", "eager"):
        straight = runs[name]
        root = straight["root"] / "resumed"
        shutil.copytree(straight["root"] / "ckpt", root)
        shutil.rmtree(root / "checkpoint-4")
        c, result, _ = _train(tiny_models, sample_split, root, True)
        assert result.resumed_from == "checkpoint-2"
        assert [step for step, _ in complete_checkpoints(root)] == [2, 4]
        resumed = [h["loss"] for h in result.history]
        assert resumed == pytest.approx(straight["losses"], rel=1e-4), name
        reference = dict(straight["unet"].named_parameters())
        for n, p in c.unet.named_parameters():
            if "lora_" in n:
                torch.testing.assert_close(p, reference[n], **WEIGHTS)


@pytest.mark.slow
def test_the_app_draws_with_a_compiled_run_s_lora_as_with_the_eager_one_s(runs, tiny_models):
    limits = defaults("generate.limits")

    def pixels(lora) -> np.ndarray:
        folder = str(runs["eager"]["root"])
        settings = EngineSettings(str(tiny_models["sd"]), lora=lora, device="cpu",
                                  outputs_dir=folder, limits=limits)  # fmt: skip
        out = Engine(settings).generate(Request("a girl", lora_scale=1.0, **DRAW), save=False)
        return np.asarray(out.images[0], dtype=np.int16)

    base = pixels(None)
    eager, compiled = (pixels(str(runs[n]["root"] / "lora")) for n in ("eager", "compiled"))
    assert np.abs(compiled - base).max() > 0
    assert np.abs(compiled - eager).max() <= 2  # the same weights to float rounding
