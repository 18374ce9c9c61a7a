"""Would regularization drawings make the trigger phrase matter? (issue 15, before the feature)

Every training caption carries the trigger phrase, so the demo's LoRA draws the style with or
without it (trigger_gain about 0). kohya's regularization images (DreamBooth's prior
preservation) add drawings in the base's own style, captioned without the trigger. This trains
the demo's LoRA on the bundled samples plus N plain drawings of the world (seeds 50,000 on,
their captions, no trigger; epochs scaled to keep about 250 steps) and judges the held-out
characters drawn with and without the trigger.

    python bench/regularization.py          # 0 and 10 plain drawings, ~6 min on 2 CPU cores
    python bench/regularization.py 0 10 20
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kshd.builders.world import character, draw  # noqa: E402
from tests.helpers import learning  # noqa: E402

log = logging.getLogger("regularization")
REG_FIRST_SEED = 50_000  # away from the samples', the judges', the references' and the pool's


def split_with_plain(work: Path, n_reg: int):
    """The samples with the trigger (as test_learning trains them) and n_reg plain drawings
    captioned without it, as one `datasets` train split."""
    (work / "reg").mkdir(parents=True, exist_ok=True)
    extra = []
    for seed in range(REG_FIRST_SEED, REG_FIRST_SEED + n_reg):
        c = character(seed)
        draw(c, "plain", (learning.RESOLUTION,) * 2).save(work / "reg" / f"{seed}.png")
        extra.append((f"reg/{seed}.png", c.caption()))
    return learning.sample_split(work, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plain", nargs="*", type=int, default=[0, 10])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="reg-")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for n_reg in args.plain:
        work = args.out / f"plain-{n_reg}"
        split = split_with_plain(work, n_reg)
        steps = learning.LEARN["epochs"] * math.ceil(10 / learning.LEARN["batch_size"])
        epochs = max(1, round(steps / math.ceil(len(split) / learning.LEARN["batch_size"])))
        c, result = learning.learn(split, work, epochs=epochs)
        lora = learning.save_learned(work / "lora", c, result, len(split))
        engine = learning.world_engine(lora)
        with_t, without = (learning.judge_drawings(engine, 1.0, trigger=t) for t in (True, False))
        results.append((n_reg, result.steps, with_t, without))
    for n_reg, steps, with_t, without in results:
        log.info(
            "%3d plain drawings, %d steps: with the trigger %s; without %s",
            n_reg,
            steps,
            with_t,
            without,
        )


if __name__ == "__main__":
    main()
