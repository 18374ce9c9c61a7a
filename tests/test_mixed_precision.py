"""Mixed precision on the CPU: bf16 (and fp16) through training, validation, checkpoint and resume.

The frozen base runs in the compute dtype and the LoRA weights stay fp32, as in diffusers'
train_text_to_image_lora.py. bf16 convolutions are slow on this CPU, so these runs are 32 px
and a handful of steps.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import kshd.training.loop as trainer
from kshd.config.compose import defaults
from kshd.evaluation.evaluate import validation_images
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, train_lora

from .conftest import ROOT
from .helpers.settings import PLAIN
from .stage_project import make_project, project_cfg

SMALL = dict(
    resolution=32,
    center_crop=True,
    random_flip=False,
    batch_size=1,
    learning_rate=1e-2,
    seed=3,
    max_grad_norm=0,
)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process; each test chooses its own."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.fixture
def two(sample_split):
    return sample_split.select(range(2))  # two steps an epoch


def ctrl_c_after(monkeypatch, step: int) -> None:
    """A real Ctrl-C (SIGINT to this process) once `step` is recorded, the first time only."""
    real, fired = trainer._record, []

    def record(p, *args, **kwargs):
        row = real(p, *args, **kwargs)
        if p.step == step and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGINT)
        return row

    monkeypatch.setattr(trainer, "_record", record)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_trains_through_validation(precision, tiny_models, two, tmp_path):
    c = load_components(str(tiny_models["sd"]))
    drawn = []

    def validate(epoch, comp):
        drawn.append(validation_images(comp, "a drawing", "", (0,), 2, 32, **PLAIN))

    s = defaults("train", **SMALL, epochs=1, mixed_precision=precision, validation_epochs=1)
    result = train_lora(c, two, s, cache_dir=tmp_path, validate=validate)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    losses = torch.tensor([h["loss"] for h in result.history])
    assert result.steps == 2 and torch.isfinite(losses).all()
    assert len(drawn) == 1 and drawn[0][0].size == (32, 32)
    lora = {n: p.dtype for n, p in c.unet.named_parameters() if "lora_" in n}
    frozen = {n: p.dtype for n, p in c.unet.named_parameters() if "lora_" not in n}
    assert lora and set(lora.values()) == {torch.float32}
    assert set(frozen.values()) == {half}
    assert {p.dtype for p in c.vae.parameters()} == {half}
    assert {p.dtype for p in c.text_encoder.parameters()} == {half}


def _bf16_run(tiny_models, split, root, cache, monkeypatch=None):
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train", **SMALL, epochs=2, mixed_precision="bf16")
    ckpt = CheckpointPolicy(root, 1, None, True, "bf16-run")
    if monkeypatch is None:
        return train_lora(c, split, s, ckpt=ckpt, cache_dir=cache)
    ctrl_c_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_lora(c, split, s, ckpt=ckpt, cache_dir=cache)
    return train_lora(load_components(str(tiny_models["sd"])), split, s, ckpt=ckpt, cache_dir=cache)


@pytest.mark.slow
def test_bf16_resume_equals_an_uninterrupted_bf16_run(tiny_models, two, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    straight = _bf16_run(tiny_models, two, tmp_path / "a", cache)
    resumed = _bf16_run(tiny_models, two, tmp_path / "b", cache, monkeypatch)
    assert resumed.resumed_from == "checkpoint-1" and resumed.steps == straight.steps == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = load_file(str(tmp_path / "a/checkpoint-4/lora.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoint-4/lora.safetensors"))
    assert {t.dtype for t in a.values()} == {torch.float32}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"


def test_fp16_gradient_scaler_state_is_checkpointed_and_restored(
    tiny_models, two, tmp_path, monkeypatch
):
    """accelerate has no fp16 scaler on the CPU, so this run gets torch's CPU GradScaler, growing
    every step: a resume that forgot the scale would end on another one."""
    import accelerate

    scalers = []

    class ScaledAccelerator(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1)
            scalers.append(self.scaler)

    monkeypatch.setattr(accelerate, "Accelerator", ScaledAccelerator)
    s = defaults("train", **SMALL, epochs=1, mixed_precision="fp16")

    def run(root, interrupt: bool):
        ckpt = CheckpointPolicy(root, 1, None, True, "fp16-run")
        args = (two, s, None, ckpt, tmp_path / "cache")
        if interrupt:
            ctrl_c_after(monkeypatch, 1)
            with pytest.raises(KeyboardInterrupt):
                train_lora(load_components(str(tiny_models["sd"])), *args)
        return train_lora(load_components(str(tiny_models["sd"])), *args)

    run(tmp_path / "a", interrupt=False)
    straight = scalers[-1].state_dict()
    resumed = run(tmp_path / "b", interrupt=True)
    saved = json.loads((tmp_path / "b/checkpoint-1/state.json").read_text())["scaler"]
    assert saved["scale"] == 2.0**5 and saved["_growth_tracker"] == 0
    assert resumed.resumed_from == "checkpoint-1"
    assert straight["scale"] == 2.0**6 and scalers[-1].state_dict() == straight
    a, b = (load_file(str(tmp_path / r / "checkpoint-2/lora.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"


@pytest.mark.slow
def test_bf16_end_to_end_train_validate_resume_evaluate_generate(
    tiny_models, tmp_path, monkeypatch
):
    """The stages in-process as `dvc repro` runs them, Ctrl-C in training, then the app."""
    from kshd import cli
    from kshd.stages import caption, dataset, evaluate, prepare, train

    bf16 = ["mixed_precision=bf16", "resolution=32", "center_crop=true", "epochs=1"]
    bf16 += ["batch_size=4", "checkpointing_steps=1", "validation_epochs=1", "validation_steps=2"]
    small = ["prompts=['drawn by KSH drawing style, a cat']", "seeds=[0]", "num_inference_steps=2"]
    small += ["lora_scales=[1.0]", "checkpoint_last=1"]
    overrides = [f"data.raw_dir={ROOT / 'data/samples'}", *(f"train.{kv}" for kv in bf16)]
    overrides += [f"evaluate.{kv}" for kv in small]
    root = make_project(tmp_path / "p", tiny_models, overrides)
    monkeypatch.chdir(root)
    cfg = project_cfg(tiny_models, overrides)
    for stage in (prepare, caption, dataset):
        stage.run(cfg)
    # training through its entry point: Ctrl-C exits 130 with a checkpoint, a rerun resumes
    ctrl_c_after(monkeypatch, 1)
    with pytest.raises(SystemExit) as stopped:
        train.main([])
    assert stopped.value.code == 130 and (root / "models/checkpoints/checkpoint-1").is_dir()
    train.main([])
    trained = json.loads((root / "reports/train/metrics.json").read_text())
    assert trained["resumed_from"] == "checkpoint-1" and trained["steps"] == 2
    assert [p.name for p in (root / "reports/validation").glob("*.png")] == ["epoch-0001.png"]
    lora = load_file(str(root / "models/lora/pytorch_lora_weights.safetensors"))
    assert {v.dtype for v in lora.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in lora.values())
    evaluate.run(cfg)
    scores = json.loads((root / "reports/metrics.json").read_text())
    assert scores["lora_pixel_delta"] > 0 and -1 <= scores["style_gain"] <= 1
    out = root / "drawn"
    with pytest.raises(SystemExit) as done:
        cli.main(
            ["generate", "--prompt", "a girl", "--steps", "2", "--width", "64", "--height", "64"]
            + ["--seed", "5", "--out", str(out), "generate.device=cpu"]
        )
    assert done.value.code == 0 and len(list(out.glob("*.png"))) == 1
