"""The EMA of the adapter's weights (train.ema_decay): its arithmetic, its exact resume, its own
pair of files drawn by the app, and its scores beside the raw weights' in the evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kshd.adapters.files import EMA_DIR, EMA_SUFFIX, file_names, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import defaults
from kshd.drawing.catalog import LoraCatalog
from kshd.evaluation.evaluate import HEADLINE, best_checkpoint
from kshd.evaluation.report import render
from kshd.stages.evaluate import curve_csv
from kshd.stages.train import write_ema
from kshd.training.checkpoints import EMA_TENSORS, complete_checkpoints
from kshd.training.components import load_components
from kshd.training.ema import AdapterEma
from kshd.training.loop import CheckpointPolicy, train_lora
from kshd.training.result import TrainResult

from .helpers.events import stop_at
from .helpers.inprocess import run_stage_here
from .helpers.lora_files import TRAIN_SETTINGS, tiny_info
from .stage_project import run_stage, stage_env
from .test_mixed_precision import SMALL, ctrl_c_after

DECAY = 0.9  # a short run's decay: the EMA differs visibly from the raw weights after 10 steps


def _feed(ema: AdapterEma, param: torch.nn.Parameter, values: list[torch.Tensor]) -> None:
    """The parameter takes each value in turn, as after optimizer steps 1, 2, ..."""
    for step, value in enumerate(values, 1):
        with torch.no_grad():
            param.copy_(value)
        ema.step(step)


def test_a_constant_decay_gives_the_closed_form():
    """Without warmup, after n updates: d^n x0 + (1 - d) * sum_k d^(n-k) x_k."""
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.25]))
    x0 = param.detach().double().clone()
    values = [torch.tensor([k, 0.5 * k, -k], dtype=torch.float32) for k in range(1, 9)]
    ema = AdapterEma([param], DECAY, every=1, warmup=False)
    _feed(ema, param, values)
    n = len(values)
    expected = DECAY**n * x0 + (1 - DECAY) * sum(
        DECAY ** (n - k) * x.double() for k, x in enumerate(values, 1)
    )
    assert torch.allclose(ema.shadow[0].double(), expected, rtol=1e-6, atol=1e-7)
    assert ema.shadow[0].dtype == torch.float32 and not torch.equal(ema.shadow[0], param)


def test_ema_every_updates_only_on_its_steps():
    """every=3: updates after steps 3 and 6 alone, the first and second update."""
    param = torch.nn.Parameter(torch.zeros(2))
    ema = AdapterEma([param], DECAY, every=3, warmup=False)
    for step in range(1, 8):
        with torch.no_grad():
            param.fill_(float(step))
        ema.step(step)
        if step < 3:
            assert torch.equal(ema.shadow[0], torch.zeros(2))  # no update yet
    expected = (1 - DECAY) * DECAY * 3.0 + (1 - DECAY) * 6.0  # x0 = 0
    assert torch.allclose(ema.shadow[0], torch.full((2,), expected), rtol=1e-6)


@pytest.mark.parametrize("every", [1, 3])
def test_the_warmup_is_diffusers_ema_model_bit_for_bit(every):
    """With train.ema_warmup, the same numbers as diffusers' EMAModel (its default ramp
    (1 + t) / (10 + t) up to the decay) stepped after every `every`-th step."""
    from diffusers.training_utils import EMAModel

    gen = torch.Generator().manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    theirs = torch.nn.Parameter(ours.detach().clone())
    ema = AdapterEma([ours], 0.999, every=every, warmup=True)
    reference = EMAModel([theirs], decay=0.999)
    for step in range(1, 31):
        value = torch.randn(4, 3, generator=gen)
        with torch.no_grad():
            ours.copy_(value)
            theirs.copy_(value)
        ema.step(step)
        if step % every == 0:
            reference.step([theirs])
    assert torch.equal(ema.shadow[0], reference.shadow_params[0])


def test_applying_the_ema_puts_the_trained_weights_back_exactly():
    param = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(1)))
    ema = AdapterEma([param], DECAY, every=1, warmup=False)
    _feed(ema, param, [torch.ones(3), torch.full((3,), 1 / 3)])
    trained = param.detach().clone()
    with ema.applied():
        assert torch.equal(param, ema.shadow[0])
    assert torch.equal(param, trained)


def _small_run(tiny_models, split, root, cache, monkeypatch=None, **changes):
    """A 32 px run of three epochs (6 steps), a checkpoint after every step; with
    `monkeypatch`, Ctrl-C after step 3 and a rerun that resumes."""
    s = defaults("train", **SMALL, epochs=3, **changes)
    ckpt = CheckpointPolicy(root, 1, None, True, "ema-run")
    if monkeypatch is not None:
        ctrl_c_after(monkeypatch, 3)
        with pytest.raises(KeyboardInterrupt):
            train_lora(
                load_components(str(tiny_models["sd"])), split, s, ckpt=ckpt, cache_dir=cache
            )
    return train_lora(load_components(str(tiny_models["sd"])), split, s, ckpt=ckpt, cache_dir=cache)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_an_ema_equals_an_uninterrupted_run(tiny_models, sample_split, tmp_path,
                                                        monkeypatch):  # fmt: skip
    """Ctrl-C after step 3 (between two updates of an EMA kept every 2 steps), then a rerun:
    the EMA and the raw weights are bit-identical to a straight run's, and the raw weights to
    a run without an EMA (keeping one does not touch training)."""
    two, cache = sample_split.select(range(2)), tmp_path / "cache"
    ema = dict(ema_decay=DECAY, ema_every=2)
    straight = _small_run(tiny_models, two, tmp_path / "a", cache, **ema)
    resumed = _small_run(tiny_models, two, tmp_path / "b", cache, monkeypatch, **ema)
    plain = _small_run(tiny_models, two, tmp_path / "c", cache)
    assert resumed.resumed_from == "checkpoint-3" and resumed.steps == straight.steps == 6
    assert _equal(resumed.ema.tensors, straight.ema.tensors), "EMA not bit-identical"
    assert straight.ema.record == {"decay": DECAY, "every": 2, "warmup": True}
    a, b, c = (load_file(str(tmp_path / r / "checkpoint-6/lora.safetensors")) for r in "abc")
    assert _equal(a, b) and _equal(a, c), "raw weights not bit-identical"
    saved = load_file(str(tmp_path / "b/checkpoint-6" / EMA_TENSORS))
    assert _equal(saved, resumed.ema.tensors) and not _equal(saved, a)
    state = json.loads((tmp_path / "b/checkpoint-6/state.json").read_text())
    assert state["ema"] == straight.ema.record
    # no EMA: checkpoints and results exactly as before
    assert plain.ema is None and not (tmp_path / "c/checkpoint-6" / EMA_TENSORS).exists()
    assert "ema" not in json.loads((tmp_path / "c/checkpoint-6/state.json").read_text())


def test_the_ema_covers_a_trained_text_encoder(tiny_models, sample_split, tmp_path):
    """With train.train_text_encoder, the text encoder's adapter is averaged and saved too."""
    two = sample_split.select(range(2))
    result = _small_run(tiny_models, two, tmp_path / "a", tmp_path / "cache",
                        train_text_encoder=True, ema_decay=DECAY)  # fmt: skip
    raw = load_file(str(tmp_path / "a/checkpoint-6/lora.safetensors"))
    assert result.ema.tensors.keys() == raw.keys()
    text = [k for k in raw if k.startswith("text_encoder.")]
    assert text and not all(torch.equal(raw[k], result.ema.tensors[k]) for k in text)


@pytest.fixture(scope="module")
def ema_run(tiny_models, sample_split, tmp_path_factory):
    """The `trained` fixture's run with an EMA, checkpoints at steps 4 and 8, saved as the train
    stage saves: the raw pair in the folder, the EMA's in its ema/."""
    root = tmp_path_factory.mktemp("ema")
    out, ckpt = root / "lora", root / "checkpoints"
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train", **TRAIN_SETTINGS, ema_decay=DECAY)
    result = train_lora(c, sample_split, s, ckpt=CheckpointPolicy(ckpt, 4, None, True, "ema"))
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    info = tiny_info(steps=result.steps, epochs=result.epochs, num_images=len(sample_split))
    save_adapter(out, adapter, info, c.unet, c.text_encoder)
    write_ema(out / EMA_DIR, adapter, info, result, c.unet.config)
    return out, ckpt, result


def _metadata(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_the_ema_pair_is_written_beside_with_the_same_fields_and_its_own(ema_run):
    out, _, result = ema_run
    diffusers, kohya = (out / EMA_DIR / name for name in file_names(EMA_SUFFIX))
    assert diffusers.name == "pytorch_lora_weights_ema.safetensors"
    assert kohya.name == "ksh_drawing_style_ema.safetensors"
    raw, ema = _metadata(out / "ksh_drawing_style.safetensors"), _metadata(kohya)
    assert raw["ss_output_name"] == "ksh_drawing_style"
    assert ema == raw | {"ss_output_name": "ksh_drawing_style_ema", "ss_ema_decay": str(DECAY),
                         "ss_ema_every": "1", "ss_ema_warmup": "True"}  # fmt: skip
    raw_b = load_file(str(out / "pytorch_lora_weights.safetensors"))
    ema_b = load_file(str(diffusers))
    assert raw_b.keys() == ema_b.keys() and not _equal(raw_b, ema_b)
    assert (
        load_file(str(kohya)).keys() == load_file(str(out / "ksh_drawing_style.safetensors")).keys()
    )


def test_without_an_ema_an_old_pair_is_removed_and_nothing_else(tmp_path):
    """A run without an EMA leaves no earlier run's pair in ema/ (a run by hand, outside DVC,
    which empties models/lora itself), nor an empty folder; a file of the user's stays."""
    folder = tmp_path / EMA_DIR
    adapter = build_adapter(defaults("train.adapter"), 4, 4)
    for keep in (None, "notes.txt"):
        folder.mkdir()
        for name in [*file_names(EMA_SUFFIX), *([keep] if keep else [])]:
            (folder / name).write_bytes(b"old")
        write_ema(folder, adapter, tiny_info(), TrainResult(), None)
        left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        assert left == ([keep] if keep else None)
        if keep:
            (folder / keep).unlink()
            folder.rmdir()
    write_ema(folder, adapter, tiny_info(), TrainResult(), None)  # nothing there: nothing made
    assert not folder.exists()


def test_the_app_lists_and_draws_the_ema_files(ema_run, tiny_models, tmp_path):
    from kshd.drawing.engine import Engine, EngineSettings
    from kshd.drawing.request import Request

    out, ckpt, _ = ema_run
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"best_checkpoint": {"step": 8, "ema": True}}))
    choices = LoraCatalog(str(out), str(ckpt), str(metrics)).choices()
    assert choices[1:] == [
        ("lora (trained)", str(out)),
        ("lora EMA (trained)", str(out / EMA_DIR)),
        ("checkpoint 4", str(ckpt / "checkpoint-4")),
        ("checkpoint 4 EMA", str(ckpt / "checkpoint-4" / EMA_TENSORS)),
        ("checkpoint 8", str(ckpt / "checkpoint-8")),
        ("checkpoint 8 EMA (best)", str(ckpt / "checkpoint-8" / EMA_TENSORS)),
    ]
    draw = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
                negative_prefix="")  # fmt: skip
    limits = defaults("generate.limits")
    engine = Engine(EngineSettings(str(tiny_models["sd"]), lora=str(out), device="cpu",
                                   outputs_dir=str(tmp_path), limits=limits))  # fmt: skip

    def pixels():
        drawn = engine.generate(Request("drawn by KSH drawing style, a girl", **draw), save=False)
        return np.asarray(drawn.images[0], dtype=np.int16), drawn.infotexts[0]

    raw, _ = pixels()
    engine.set_lora(str(out / EMA_DIR))
    ema, info = pixels()
    assert 'Lora hashes: "ksh_drawing_style_ema: ' in info and not np.array_equal(ema, raw)
    engine.set_lora(str(ckpt / "checkpoint-8" / EMA_TENSORS))
    _, info = pixels()
    assert "<lora:checkpoint-8_ema:1>" in info


def test_the_best_checkpoint_may_be_an_ema():
    curve = [
        {"step": 4, "style_gain": 0.1, "ema_style_gain": 0.3},
        {"step": 8, "style_gain": 0.2, "ema_style_gain": 0.2},
    ]
    assert best_checkpoint(curve, "style_gain") == {
        "step": 4, "by": "style_gain", "value": 0.3, "ema": True,
    }  # fmt: skip
    curve[0]["ema_style_gain"] = 0.2  # a tie: the raw weights
    assert best_checkpoint(curve, "style_gain")["ema"] is False
    plain = [{k: v for k, v in r.items() if not k.startswith("ema_")} for r in curve]
    assert best_checkpoint(plain, "style_gain") == {"step": 8, "by": "style_gain", "value": 0.2}


def test_the_evaluation_scores_the_ema_beside_the_raw_weights(ema_run, tiny_models, tmp_path):
    from .helpers.settings import QUICK_EVAL, sample_settings
    from .test_evaluation import _evaluate, _pipe

    out, ckpt, result = ema_run
    s = sample_settings(**QUICK_EVAL, prompts=("drawn by KSH drawing style, a girl",),
                        trigger_phrase="drawn by KSH drawing style")  # fmt: skip
    found = complete_checkpoints(ckpt)
    assert [step for step, _ in found] == [4, 8]
    evaluation = _evaluate(_pipe(tiny_models), out, s, tmp_path, tiny_models, found, result.steps)
    metrics, curve = evaluation.metrics, evaluation.curve
    assert all(isinstance(metrics[f"ema_{k}"], float) for k in HEADLINE)
    assert metrics["ema_style_gain"] != metrics["style_gain"]
    assert [r["step"] for r in curve] == [4, 8, 10]
    assert all(f"ema_{k}" in r for r in curve for k in HEADLINE)
    assert curve[-1]["ema_style_gain"] == metrics["ema_style_gain"]
    by = metrics["best_checkpoint"]["by"]
    values = [r[by] for r in curve] + [r[f"ema_{by}"] for r in curve]
    assert metrics["best_checkpoint"]["value"] == max(values)
    assert "ema" in metrics["best_checkpoint"]
    header = curve_csv(curve).splitlines()[0].split(",")
    assert header == ["step", *HEADLINE, *(f"ema_{k}" for k in HEADLINE)]
    ema_best = metrics | {"best_checkpoint": {"step": 8, "ema": True}}
    page = render(ema_best, curve, [], [], [], tmp_path)
    assert "<th>EMA</th>" in page and "<th>ema_style_gain</th>" in page
    assert "best checkpoint: step 8 (EMA)" in page


def test_the_comparison_page_says_when_the_best_is_an_ema():
    from kshd.experiments.compare_page import table
    from kshd.experiments.finished import Experiment

    best = {"step": 8, "by": "style_gain", "value": 0.3}
    ema = Experiment("a", "r1", {}, {}, best | {"ema": True})
    page = table([ema, Experiment("b", "r2", {}, {}, best)], [])
    assert "step 8 EMA (style_gain)" in page and "step 8 (style_gain)" in page


@pytest.mark.slow
def test_the_train_stage_s_ema_pair_after_sigkill_and_rerun_equals_an_uninterrupted_run(
    ready_project, tmp_path
):
    """The stage killed right after checkpoint-6, rerun in a new process: its EMA files are the
    uninterrupted run's, byte for byte (the kohya file) and tensor for tensor."""
    args = ["train.epochs=6", "train.checkpointing_steps=3", "train.validation_epochs=0",
            "train.ema_decay=0.9", "train.ema_every=2"]  # fmt: skip
    killed = tmp_path / "killed"
    straight = ready_project(killed, args)
    stop_at(killed, "train", "SIGKILL", r"log:checkpoint-6 saved", stage_env())
    assert (killed / "models/checkpoints/checkpoint-6" / EMA_TENSORS).is_file()
    run_stage(killed, "train")
    run_stage_here(straight, "train")
    metrics = json.loads((killed / "reports/train/metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-6"
    diffusers, kohya = file_names(EMA_SUFFIX)
    ema_a, ema_b = (root / "models/lora" / EMA_DIR for root in (killed, straight))
    assert (ema_a / kohya).read_bytes() == (ema_b / kohya).read_bytes(), "not bit-identical"
    a, b = load_file(str(ema_a / diffusers)), load_file(str(ema_b / diffusers))
    raw = load_file(str(killed / "models/lora" / file_names()[0]))
    assert _equal(a, b) and not _equal(a, raw)
