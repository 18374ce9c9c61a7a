"""`make demo`: the five stages on the bundled samples, as a DVC experiment, offline.

The base model and the evaluation's CLIP are the demo world's, pretrained here and committed
(`models/world/`, kshd_world.pretrain_world); the tiny random models are built first (all nine
of `tiny.dir`: the caption stage loads the BLIP-2; the stages never build models, so editing a
builder reruns no stage). Then it runs
`dvc exp run -S +experiment=demo` in this workspace, so the results stay here to look at (and in
`dvc exp show`), then puts back the committed `params.yaml` (the real setup),
so that a following `dvc repro` trains for real and `git status` shows no edited config.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kshd.config.schema import ProjectConfig
from kshd.experiments.dvc import dvc_executable

log = logging.getLogger("kshd_world.demo")

DEMO_OVERRIDE = "+experiment=demo"


def build_demo_models(cfg: ProjectConfig, root: Path = Path()) -> None:
    """The demo profile's tiny local models (`tiny.build`, in `tiny.dir` under `root`), built or
    brought up to date before DVC or the app runs: stages only check that the folders exist."""
    if cfg.tiny.build:
        from kshd_world.tiny import build_tiny_models

        for name, path in build_tiny_models(root / cfg.tiny.dir, cfg.tiny.seed).items():
            log.info("tiny %s model: %s", name, path)


def demo_models(root: Path, overrides: Sequence[str] = ()) -> None:
    """The tiny models of conf/ composed with `+experiment=demo` and `overrides` (the `tiny.*`
    ones count; sweep lists such as `train.epochs=1,2` are left out), under `root`."""
    from kshd.config.compose import compose_conf

    keep = [o for o in overrides if o.startswith("tiny.") and "," not in o]
    build_demo_models(compose_conf([DEMO_OVERRIDE, *keep], conf_dir=root / "conf"), root)


def run_demo(root: Path, extra: list[str]) -> int:
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode:
        log.error("%s: `dvc exp run` needs a git repository with at least one commit", root)
        return 2
    demo_models(root)
    params = root / "params.yaml"
    saved = params.read_bytes()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    try:
        code = subprocess.run(
            [dvc_executable(), "exp", "run", "-S", DEMO_OVERRIDE, *extra], cwd=root, env=env
        ).returncode
    finally:
        params.write_bytes(saved)  # the committed, real setup
    if code == 0:
        _summary(root, time.perf_counter() - start)
    return code


def _summary(root: Path, seconds: float) -> None:
    metrics = json.loads((root / "reports" / "metrics.json").read_text(encoding="utf-8"))
    train = json.loads((root / "reports/train/metrics.json").read_text(encoding="utf-8"))
    log.info("demo finished in %.0f s. Results:", seconds)
    for path, what in [
        ("data/reports/prepare.json", "what happened to every drawing"),
        ("data/info.csv", "captions (image,text)"),
        ("data/dataset/", "the Hugging Face dataset"),
        ("models/lora/pytorch_lora_weights.safetensors", "the LoRA (diffusers)"),
        ("models/lora/ksh_drawing_style.safetensors", "the LoRA (AUTOMATIC1111 / ComfyUI)"),
        ("reports/grids/", "base model | LoRA samples"),
        ("reports/index.html", "the evaluation report (opens offline in a browser)"),
        (
            "reports/metrics.json",
            "evaluation metrics: "
            + ", ".join(
                f"{k} {metrics[k]:.4f}"
                for k in ("style_gain", "clip_score", "memorization")
                if isinstance(metrics.get(k), float)
            ),
        ),
    ]:
        log.info("  %-46s %s", path, what)
    log.info("  training: %s steps, final loss %.4f", train["steps"], train["final_loss"])
    log.info("params.yaml was restored to the real setup; `dvc exp show` lists the demo run.")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(run_demo(Path.cwd(), sys.argv[1:]))


if __name__ == "__main__":
    main()
