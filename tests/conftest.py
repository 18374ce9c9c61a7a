"""Shared fixtures: the real config composed from conf/, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers.parallel import (  # noqa: F401 (pytest's hooks: xdist workers, threads, order)
    exclusive,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_runtest_protocol,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
    run_folder,
)

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, pytestconfig) -> dict[str, Path]:
    """The demo's tiny models, saved with save_pretrained: built once for the run (~9 s), in a
    folder the xdist workers share (the first builds, under a lock; the others find them)."""
    from kshd_world.tiny import build_tiny_models

    shared = run_folder(pytestconfig)
    if shared is None:
        return build_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)
    with exclusive(shared / "tiny.lock"):
        return build_tiny_models(shared / "tiny", seed=0)


# Tests of the stages' mechanics on the tiny random models train the demo profile's run made
# quick: 16 steps of an attention-only rank-4 LoRA, as the demo trained before it had a world
# to learn (tests/test_learning.py trains the demo's own settings on the world's models).
QUICK_TRAIN = [
    "train.epochs=4",
    "train.learning_rate=1e-2",
    "train.rank=4",
    "train.alpha=4",
    "train/adapter=lora",  # the group chosen over the demo's locon: attention only
    "train.checkpointing_steps=6",
    "train.checkpoints_total_limit=2",
    "train.validation_epochs=2",
]


# DVC tests of the stages' mechanics evaluate quickly too: one seed, 4 sampling steps, no
# checkpoint curve (the final LoRA's row only); test_pipeline_e2e evaluates as the demo does.
QUICK_EVAL = ["evaluate.seeds=[0]", "evaluate.num_inference_steps=4", "evaluate.checkpoints=false",
              "evaluate.sketch.drawings=2"]  # fmt: skip


def quick_dvc_params(*swept: str) -> list[str]:
    """QUICK_TRAIN and QUICK_EVAL as `dvc exp run -S` arguments, leaving out the keys a test
    sets itself."""
    quick = QUICK_TRAIN + QUICK_EVAL
    return [a for o in quick if o.split("=")[0] not in swept for a in ("-S", o)]


def demo_overrides(tiny_models: dict[str, Path], raw_dir: str | Path) -> list[str]:
    """The demo profile on `raw_dir` with the session's tiny models, tracking off and training
    cut to QUICK_TRAIN: the overrides demo_cfg and tests/stage_project.py share."""
    return [
        "+experiment=demo",
        f"data.raw_dir={raw_dir}",
        f"caption.model={tiny_models['blip2']}",
        f"model.pretrained={tiny_models['sd']}",
        f"evaluate.clip_model={tiny_models['clip']}",
        f"generate.control.models.lineart={tiny_models['controlnet']}",
        f"generate.control.models.lineart_anime={tiny_models['controlnet']}",
        f"evaluate.style_references={ROOT / 'data' / 'style_refs'}",
        "tiny.build=false",
        "tracking.mode=disabled",
    ]


@pytest.fixture
def demo_cfg(tmp_path, tiny_models):
    """The demo profile composed from conf/ as DVC does, every path moved into tmp_path (the
    caption and latent caches too), tracking off: for calling a stage's `run(cfg)` in-process."""
    from dataclasses import asdict

    from kshd.config.compose import compose_conf, with_values

    cfg = compose_conf(
        [*demo_overrides(tiny_models, ROOT / "data" / "samples"), *QUICK_TRAIN],
        conf_dir=ROOT / "conf",
    )
    moved = {  # data/..., models/..., reports/...
        f"{group}.{key}": str(tmp_path / value)
        for group in ("data", "output")
        for key, value in asdict(getattr(cfg, group)).items()
        if key != "raw_dir"
    }
    return with_values(
        cfg,
        moved
        | {
            "caption.overrides": str(tmp_path / "caption_overrides.csv"),
            "generate.lora": moved["output.lora_dir"],
            "generate.outputs_dir": str(tmp_path / "outputs"),
        },
    )


@pytest.fixture(scope="session")
def sample_split(tmp_path_factory):
    """The bundled samples as a `datasets` train split with simple captions (64 px)."""
    from kshd.data.captioning import write_info_csv
    from kshd.data.dataset import build_dataset, load_rows
    from kshd.data.intake import prepare_folder

    from .helpers.settings import intake

    work = tmp_path_factory.mktemp("split")
    report = prepare_folder(ROOT / "data" / "samples", work / "prepared", **intake(resolution=64))
    rows = [
        (f"prepared/{item['output']}", "a drawing, drawn by KSH drawing style")
        for item in report.images
    ]
    write_info_csv(work / "info.csv", rows)
    return build_dataset(load_rows(work / "info.csv"), holdout_fraction=0.0)["train"]


@pytest.fixture(scope="session")
def random_lora(tiny_models, tmp_path_factory) -> Path:
    """A LoRA folder for the tiny SD with random (non-zero) weights, in both file formats."""
    from diffusers import UNet2DConditionModel

    from kshd.adapters.files import save_adapter

    from .helpers.lora_files import TINY_INFO, make_adapter, randomize_lora_b

    out = tmp_path_factory.mktemp("random_lora")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    lora = make_adapter(4, 4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    lora.inject(unet)
    randomize_lora_b(unet, seed=1, scale=0.3)
    save_adapter(out, lora, TINY_INFO, unet)
    return out


@pytest.fixture(scope="module")
def trained(tiny_models, sample_split, tmp_path_factory):
    """A LoRA trained for a few steps on the samples and saved in both formats."""
    from kshd.adapters.files import save_adapter
    from kshd.adapters.registry import build_adapter
    from kshd.config.compose import defaults
    from kshd.training.components import load_components
    from kshd.training.loop import train_lora

    from .helpers.lora_files import TRAIN_SETTINGS, tiny_info

    out = tmp_path_factory.mktemp("lora")
    c = load_components(str(tiny_models["sd"]))
    rows = []
    s = defaults("train", **TRAIN_SETTINGS)
    result = train_lora(c, sample_split, s, on_log=rows.append)
    info = tiny_info(steps=result.steps, epochs=result.epochs, num_images=len(sample_split), seed=7)
    save_adapter(out, build_adapter(s.adapter, s.rank, s.alpha), info, c.unet, c.text_encoder)
    return out, result, rows


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (never `playwright install`), one per test module."""
    from .browser import ARGS, CHROMIUM

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


# Keys that prepare, caption and dataset never read (dvc.yaml's params for those stages are
# prepare.*, caption and dataset.*): a project differing only in these reuses their outputs.
AFTER_THE_DATASET = ("train.", "train/", "model.", "evaluate.")


@pytest.fixture(scope="session")
def prepared_samples(tiny_models, tmp_path_factory) -> Path:
    """A project on the bundled samples (tests/stage_project.py's make_project) with prepare,
    caption and dataset run once for the session, in this process."""
    from .helpers.inprocess import run_stage_here
    from .stage_project import make_project

    folder = tmp_path_factory.mktemp("prepared") / "p"
    root = make_project(folder, tiny_models, [f"data.raw_dir={ROOT / 'data' / 'samples'}"])
    for stage in ("prepare", "caption", "dataset"):
        run_stage_here(root, stage)
    return root


@pytest.fixture
def ready_project(prepared_samples, tiny_models):
    """`ready(root, overrides, quick=True)`: a project in `root` on the bundled samples with
    prepare, caption and dataset done (a copy of prepared_samples, its params.yaml written with
    `overrides`, which must all be keys read after the dataset), and a copy of it
    (`<root>-straight`, returned) to run without interruption as the reference."""
    import shutil

    from .stage_project import make_project

    def ready(root: Path, overrides: list[str] = (), quick: bool = True) -> Path:
        upstream = [o for o in overrides if not o.startswith(AFTER_THE_DATASET)]
        if upstream:
            raise ValueError(f"{upstream}: read by prepare, caption or dataset; run those")
        shutil.copytree(prepared_samples, root, symlinks=True)
        samples = f"data.raw_dir={ROOT / 'data' / 'samples'}"
        make_project(root, tiny_models, [*overrides, samples], quick)
        straight = root.with_name(f"{root.name}-straight")
        shutil.copytree(root, straight, symlinks=True)
        return straight

    return ready
