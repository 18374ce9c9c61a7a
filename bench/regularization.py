"""Do the regularization drawings make the trigger phrase matter, and how much weight do they need?

Every training caption carries the trigger phrase, so a LoRA trained on the samples alone draws
the style with or without it. The demo trains with data/sample_reg/ (`data.reg_dir`: ten plain
drawings, the base's own style, captioned without the trigger), as many an epoch as samples,
their loss weighted by `train.prior_loss_weight`. This trains the demo's run (tests/helpers/
learning: all ten samples, 250 steps) without them (twice the epochs: the same steps) and with
them at each weight given, and judges the held-out characters drawn with and without the trigger.

    python bench/regularization.py             # none, weight 1.0 (the default): ~4 min, 2 cores
    python bench/regularization.py 0.5 1.0 2.0
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from kshd_world import learning

log = logging.getLogger("regularization")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", type=float, default=[1.0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="reg-")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    split = learning.sample_split(args.out / "data")
    reg = learning.reg_split(args.out / "data")
    results = []
    for weight in [None, *args.weights]:
        work = args.out / ("none" if weight is None else f"w{weight}")
        if weight is None:
            c, result = learning.learn(split, work, epochs=2 * learning.LEARN["epochs"])
        else:
            c, result = learning.learn(split, work, reg=reg, prior_loss_weight=weight)
        engine = learning.world_engine(learning.save_learned(work / "lora", c, result, len(split)))
        with_t, without = (learning.judge_drawings(engine, 1.0, trigger=t) for t in (True, False))
        results.append((weight, result.steps, with_t, without))
    for weight, steps, with_t, without in results:
        log.info(
            "%-34s %d steps: with the trigger %s; without %s",
            "no regularization drawings," if weight is None else f"prior_loss_weight {weight},",
            steps,
            with_t,
            without,
        )


if __name__ == "__main__":
    main()
