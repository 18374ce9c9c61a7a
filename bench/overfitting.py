"""Does training far longer overfit, and does the evaluation see it?

Trains the demo's LoRA on the bundled samples over the world's base (as tests/test_learning
does) for each number of epochs given, draws the held-out characters, and prints side by side:
`memorization` (the nearest training drawing's CLIP cosine, as `evaluate` reports it),
`style_similarity` against the demo's 64 style references, and the ink judge's KSH share.

    python bench/overfitting.py              # 25 and 100 epochs (250 and 1,000 steps), ~8 min
    python bench/overfitting.py 25 50 100
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from PIL import Image

from kshd.config.compose import compose_conf
from kshd.evaluation.metrics import ClipEncoder, memorization, style_similarity
from kshd_world import learning
from kshd_world.world_judges import judge_style

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("overfitting")
DEMO = compose_conf(["+experiment=demo"], conf_dir=ROOT / "conf")


def scores(encoder: ClipEncoder, images: list[Image.Image], trained, refs) -> dict:
    emb = encoder.images(images)
    return {
        "memorization": memorization(emb, trained),
        "style_similarity": style_similarity(emb, refs),
        "ksh": sum(judge_style(im) == "ksh" for im in images) / len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("epochs", nargs="*", type=int, default=[25, 100])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="overfit-")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    encoder = ClipEncoder(str(ROOT / DEMO.evaluate.clip_model))
    split = learning.sample_split(args.out / "data")
    trained = encoder.images([row["image"].convert("RGB") for row in split])
    folder = ROOT / DEMO.evaluate.style_references
    refs = encoder.images([Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))])
    rows = [
        (
            "base",
            scores(
                encoder,
                learning.judge_drawings(learning.world_engine(None), 1.0).images,
                trained,
                refs,
            ),
        )
    ]
    for epochs in args.epochs:
        reg = learning.reg_split(args.out / "data")
        c, result = learning.learn(split, args.out, reg=reg, epochs=epochs)
        lora = learning.save_learned(args.out / f"e{epochs}", c, result, len(split))
        drawn = learning.judge_drawings(learning.world_engine(lora), lora_scale=1.0)
        rows.append((f"{result.steps} steps", scores(encoder, drawn.images, trained, refs)))
    for name, r in rows:
        log.info(
            "%-11s memorization %.3f  style_similarity %+.3f  KSH %3.0f%%",
            name,
            r["memorization"],
            r["style_similarity"],
            100 * r["ksh"],
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
