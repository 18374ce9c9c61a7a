"""The optimizer seam (`train/optimizer=`): each kind trains the tiny model, resumes exactly from
its checkpointed state, schedule-free samples and saves its averaged weights, adamw8bit is refused
on a CPU before any model loads, and the replaced `train.*` keys name the group."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import kshd.stages.train as train_stage
import kshd.training.loop as trainer
from kshd.config.compose import compose_conf, defaults, load_params
from kshd.config.errors import ConfigError
from kshd.config.fill import as_plain
from kshd.training.checkpoints import fingerprint
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, train_lora
from kshd.training.optimizers import optimizer_kind
from kshd.training.optimizers.schedulefree_adamw import ScheduleFreeAdamw

from .conftest import ROOT

# 64 px, two drawings a batch: 5 steps an epoch on the samples
BASE = dict(resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=11)
KINDS = ("adamw", "prodigy", "schedulefree_adamw")


def optimizer(kind: str) -> dict:
    """The `train.optimizer` node of a kind as conf/train/optimizer/ gives it."""
    return as_plain(compose_conf([f"train/optimizer={kind}"], ROOT / "conf").train.optimizer)


def settings(kind: str, **changes):
    return defaults("train", **{**BASE, **changes, "optimizer": optimizer(kind)})


def lora_weights(c) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in c.unet.named_parameters() if "lora_" in n}


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


def crash_after_checkpoint(monkeypatch, step: int) -> None:
    """The process dies right after checkpoint-`step` is in place, the first time only."""
    real, fired = trainer.save_checkpoint, []

    def save(root, run_fp, progress, *args, **kwargs):
        path = real(root, run_fp, progress, *args, **kwargs)
        if progress.step == step and not fired:
            fired.append(step)
            raise Crash
        return path

    monkeypatch.setattr(trainer, "save_checkpoint", save)


@pytest.mark.parametrize("kind", ["prodigy", "schedulefree_adamw"])  # adamw: test_training.py
def test_each_optimizer_trains_the_tiny_model_and_keeps_its_state_in_the_checkpoint(
    kind, tiny_models, sample_split, tmp_path
):
    """The kind's optimizer steps (the LoRA's B matrices, zero at the start, move) at its own
    rate, and its state reaches the checkpoint: Prodigy's step-size estimate d and its sums,
    schedule-free's z and weight sum."""
    c = load_components(str(tiny_models["sd"]))
    s = settings(kind, lr_scheduler="constant")
    ckpt = CheckpointPolicy(tmp_path / "ckpt", 5, None, True, kind)
    rows = []
    result = train_lora(c, sample_split, s, rows.append, ckpt, cache_dir=tmp_path / "cache")
    losses = [h["loss"] for h in result.history]
    assert result.steps == 10 and all(torch.isfinite(torch.tensor(losses)))
    assert any(p.abs().sum() > 0 for n, p in lora_weights(c).items() if "lora_B" in n)
    # Prodigy at its own lr 1.0 (train.learning_rate 1e-2 is not used)
    assert {h["lr"] for h in result.history} == {1.0 if kind == "prodigy" else 1e-2}
    groups = json.loads((tmp_path / "ckpt/checkpoint-10/state.json").read_text())["optimizer"]
    group = groups["param_groups"][0]
    if kind == "prodigy":
        # its estimate's running sums (d grows from d0 over hundreds of steps, not ten)
        assert group["d_numerator"] > 0 and group["d_denom"] > 0 and group["k"] == 10
        assert group["d"] >= group["d0"] == 1e-6
        assert group["d_coef"] == 1.0 and group["safeguard_warmup"] and group["decouple"]
        assert rows[-1]["d*lr"] == group["d"] * group["lr"]  # logged as kohya's lr/d*lr
    if kind == "schedulefree_adamw":
        assert "d*lr" not in rows[-1]
        assert group["weight_sum"] > 0 and group["k"] == 10 and group["train_mode"] is False
        state = load_file(str(tmp_path / "ckpt/checkpoint-10/training_state.safetensors"))
        assert any(k.endswith(".z") for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prodigy", "schedulefree_adamw"])
def test_resume_after_a_kill_is_bit_identical(
    kind, tiny_models, sample_split, tmp_path, monkeypatch
):
    """Killed right after checkpoint-4 (5 steps an epoch: mid-epoch), the rerun resumes from it
    and ends with the LoRA, the losses and the optimizer's state of the uninterrupted run, bit
    for bit: Prodigy's d and sums, schedule-free's z, weight sum and train/eval mode, through
    the validation after each epoch (schedule-free's switch to its averaged weights and back)."""
    s = settings(kind, validation_epochs=1)
    cache = tmp_path / "cache"

    def run(root):
        c = load_components(str(tiny_models["sd"]))
        result = train_lora(c, sample_split, s, ckpt=CheckpointPolicy(root, 2, None, True, kind),
                            cache_dir=cache, validate=lambda epoch, comp: None)  # fmt: skip
        return result, lora_weights(c)

    straight, weights = run(tmp_path / "a")
    crash_after_checkpoint(monkeypatch, 4)
    with pytest.raises(Crash):
        run(tmp_path / "b")
    resumed, again = run(tmp_path / "b")
    assert resumed.resumed_from == "checkpoint-4" and resumed.steps == straight.steps == 10
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[k], again[k]) for k in weights), "not bit-identical"
    a, b = (load_file(str(tmp_path / f"{r}/checkpoint-10/training_state.safetensors"))
            for r in "ab")  # fmt: skip
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("opt."))
    meta = [json.loads((tmp_path / f"{r}/checkpoint-10/state.json").read_text())["optimizer"]
            for r in "ab"]  # fmt: skip
    assert meta[0] == meta[1]


def test_schedule_free_samples_checkpoints_and_saves_its_averaged_weights(
    tiny_models, sample_split, tmp_path, monkeypatch, caplog
):
    """A spy on the optimizer: every step in train mode, every validation and checkpoint in
    eval mode, and train_lora returns (for the final save) the eval-mode weights x, which are
    neither the weights the gradient is taken at (y) nor the base sequence (z). The cosine
    schedule it cannot use is named in one warning, and the rate stays constant."""
    from schedulefree import AdamWScheduleFree

    built, seen = [], []
    real_build, real_step, real_save = (
        ScheduleFreeAdamw.build,
        AdamWScheduleFree.step,
        trainer.save_checkpoint,
    )

    def mode() -> str:
        return "train" if built[0].param_groups[0]["train_mode"] else "eval"

    def build(self, params, lr):
        built.append(real_build(self, params, lr))
        return built[-1]

    def step(self, *args, **kwargs):
        seen.append(("step", mode()))
        return real_step(self, *args, **kwargs)

    def save(*args, **kwargs):
        seen.append(("checkpoint", mode()))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ScheduleFreeAdamw, "build", build)
    monkeypatch.setattr(AdamWScheduleFree, "step", step)
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    c = load_components(str(tiny_models["sd"]))
    s = settings("schedulefree_adamw", validation_epochs=1)  # lr_scheduler: cosine (conf/)
    with caplog.at_level(logging.WARNING):
        result = train_lora(
            c,
            sample_split,
            s,
            ckpt=CheckpointPolicy(tmp_path, 3, None, True, "sf"),
            cache_dir=tmp_path / "cache",
            validate=lambda epoch, comp: seen.append(("validate", mode())),
        )
    events = [e for e, _ in seen]
    assert events.count("step") == 10 and events.count("validate") == 2
    assert events.count("checkpoint") == 3  # steps 3, 6, 9
    assert {m for e, m in seen if e == "step"} == {"train"}
    assert {m for e, m in seen if e != "step"} == {"eval"}
    assert mode() == "eval"  # the weights train_lora hands back are saved as they are
    warned = [r.getMessage() for r in caplog.records if "schedulefree_adamw" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0] and "train.lr_scheduler=cosine" in warned[0]
    assert {h["lr"] for h in result.history} == {1e-2}
    opt = built[0]
    params = [p for g in opt.param_groups for p in g["params"]]
    x = [p.detach().clone() for p in params]
    opt.train()
    y = [p.detach().clone() for p in params]
    z = [opt.state[p]["z"] for p in params]
    beta1 = opt.param_groups[0]["betas"][0]
    assert all(torch.allclose(xi, (yi - (1 - beta1) * zi) / beta1, atol=1e-6)
               for xi, yi, zi in zip(x, y, z, strict=True))  # fmt: skip
    assert not all(torch.equal(xi, yi) for xi, yi in zip(x, y, strict=True))
    assert not all(torch.equal(xi, zi) for xi, zi in zip(x, z, strict=True))


def test_adamw8bit_on_a_cpu_is_refused_in_one_line_before_any_model_loads(
    demo_cfg, tiny_models, sample_split, monkeypatch
):
    """bitsandbytes' 8-bit AdamW is CUDA only: the train stage says so, and the way out, before
    it resolves or loads a model; train_lora before it builds the dataset."""
    called = []
    for name in ("resolve_models", "load_components"):
        monkeypatch.setattr(train_stage, name, lambda *a, _n=name, **k: called.append(_n))
    cfg = replace(
        demo_cfg, train=replace(demo_cfg.train, optimizer=settings("adamw8bit").optimizer)
    )
    with pytest.raises(ConfigError) as err:
        train_stage.run(cfg)
    text = str(err.value)
    assert "\n" not in text and called == []
    assert "train/optimizer=adamw8bit" in text and "`train/optimizer=adamw`" in text
    monkeypatch.setattr(trainer, "build_dataset", lambda *a, **k: called.append("dataset"))
    with pytest.raises(ConfigError, match="train/optimizer=adamw8bit needs a CUDA GPU"):
        train_lora(load_components(str(tiny_models["sd"])), sample_split, settings("adamw8bit"))
    assert called == []


def test_adamw8bit_on_a_cuda_machine_without_bitsandbytes_is_one_line_before_any_work(
    demo_cfg, monkeypatch
):
    """memory=gpu_12gb / gpu_16gb choose 8-bit AdamW; on a CUDA machine where bitsandbytes is
    not installed the train stage says so, and both ways out, before it loads any model (not an
    ImportError traceback once the latent cache is filled)."""
    called = []
    for name in ("resolve_models", "load_components"):
        monkeypatch.setattr(train_stage, name, lambda *a, _n=name, **k: called.append(_n))
    cuda = type("State", (), {"device": torch.device("cuda"), "is_main_process": True})
    monkeypatch.setattr(train_stage, "process_state", cuda)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` fails
    preset = compose_conf(["+experiment=sdxl", "memory=gpu_12gb"], ROOT / "conf").train.optimizer
    assert preset.kind == "adamw8bit"
    cfg = replace(demo_cfg, train=replace(demo_cfg.train, optimizer=preset))
    with pytest.raises(ConfigError) as err:
        train_stage.run(cfg)
    text = str(err.value)
    assert "\n" not in text and called == []
    assert "train/optimizer=adamw8bit" in text and "bitsandbytes" in text
    assert "`make setup`" in text and "`train/optimizer=adamw`" in text


def test_adamw8bit_without_bitsandbytes_says_what_to_install():
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    kind = optimizer_kind(settings("adamw8bit").optimizer)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        kind.build([torch.nn.Parameter(torch.zeros(2))], 1e-4)


@pytest.mark.parametrize(
    "override, says",
    [
        ("train.use_8bit_adam=true", "`train/optimizer=adamw8bit`"),
        ("+train.use_8bit_adam=true", "`train/optimizer=adamw8bit`"),
        ("train.adam_beta2=0.99", "`train.optimizer.betas=[<beta1>,<beta2>]`"),
        ("train.adam_epsilon=1e-6", "`train.optimizer.eps`"),
    ],
)
def test_a_replaced_key_names_what_replaced_it_in_one_line(override, says, tmp_path):
    """By hand, with DVC's composition from conf/, and in an old params file that still has it."""
    old = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    old.write_text(text.replace("  max_grad_norm:", "  use_8bit_adam: true\n  max_grad_norm:"))
    for load in (
        lambda: compose_conf([override], conf_dir=ROOT / "conf"),
        lambda: load_params([override], params_file=ROOT / "params.yaml"),
    ):
        with pytest.raises(ConfigError) as err:
            load()
        assert "\n" not in str(err.value) and says in str(err.value)
        assert f"`{override.lstrip('+').split('=')[0]}` was replaced" in str(err.value)
    with pytest.raises(ConfigError, match=r"`train\.use_8bit_adam` was replaced.*adamw8bit"):
        load_params([], params_file=old)


def test_the_optimizer_s_keys_are_in_the_fingerprint_and_adamw_s_as_before():
    """AdamW's keys hash under their old `train.*` names (and 8-bit AdamW as use_8bit_adam=true
    did), so checkpoints of earlier runs resume; every other kind, or a changed key of it, is
    another run."""
    adamw = defaults("train")
    assert fingerprint(settings=adamw.defining()) == "cb6541ea5ad123159fc2"
    old = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_weight_decay": 0.01,
           "adam_epsilon": 1e-8}  # fmt: skip
    assert adamw.optimizer.fingerprint() == old | {"use_8bit_adam": False}
    assert settings("adamw8bit").optimizer.fingerprint() == old | {"use_8bit_adam": True}
    prints = {fingerprint(settings=settings(k).defining()) for k in (*KINDS, "adamw8bit")}
    assert len(prints) == 4
    prodigy = settings("prodigy")
    tuned = replace(prodigy, optimizer=replace(prodigy.optimizer, d_coef=2.0))
    assert tuned.defining() != prodigy.defining()
    assert prodigy.defining()["optimizer"]["kind"] == "prodigy"


def test_memory_presets_choose_8bit_adamw_and_a_chosen_optimizer_wins():
    conf = ROOT / "conf"
    assert compose_conf(["memory=gpu_12gb"], conf).train.optimizer.kind == "adamw8bit"
    assert compose_conf(["memory=gpu_24gb"], conf).train.optimizer.kind == "adamw"
    both = compose_conf(["memory=gpu_16gb", "train/optimizer=prodigy"], conf).train
    assert both.optimizer.kind == "prodigy" and both.batch_size == 2


def test_an_ema_beside_schedule_free_is_refused_in_one_line():
    """Schedule-free AdamW averages its weights itself and saves that average; an EMA would
    follow the other sequence after each step, so its files would hold other weights than the
    run's. The pair is refused at load, naming both keys; either alone composes."""
    with pytest.raises(ConfigError, match=r"`train\.ema_decay`.*schedulefree_adamw") as err:
        compose_conf(["train/optimizer=schedulefree_adamw", "train.ema_decay=0.99"], ROOT / "conf")
    assert "\n" not in str(err.value)
    compose_conf(["train/optimizer=schedulefree_adamw"], ROOT / "conf")
    compose_conf(["train/optimizer=prodigy", "train.ema_decay=0.99"], ROOT / "conf")


def test_prodigy_warns_of_a_low_learning_rate_once(caplog):
    """Asked for its rate twice (the loop, the kohya file's record), Prodigy warns once, when
    it is built: a rate far below 1.0 leaves its estimate d without effect."""
    kind = optimizer_kind(replace(settings("prodigy").optimizer, lr=0.01))
    with caplog.at_level(logging.WARNING):
        lr = kind.learning_rate(1e-4)
        kind.build([torch.nn.Parameter(torch.zeros(2))], lr)
        assert kind.learning_rate(1e-4) == lr == 0.01
    warned = [r for r in caplog.records if "Prodigy wants about 1.0" in r.getMessage()]
    assert len(warned) == 1
