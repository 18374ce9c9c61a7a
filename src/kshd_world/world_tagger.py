"""A tiny WD v3-format tagger that knows the demo world, trained here, so that the demo's
`caption.kind=wd_tagger` writes the right Danbooru tags for the world's drawings.

`make world-tagger` (`python -m kshd_world.world_tagger models/world-tagger`) draws world
characters of seeds 100_000 on, in both styles, as the artist's files come (most 256 px square,
some 128 or 192 px, some 256x320 or 320x256, a quarter RGBA on a transparent ground, which is
then a white background), passes each through kohya's WD preprocessing
(`world_tags.wd_preprocess`: alpha onto white, pad to a white square, INTER_AREA down to
96 px, BGR, float 0-255) and trains a small CNN on the tags their attributes give
(`world_tags.tags_of`). It writes, as SmilingWolf's v3 taggers ship: `model.onnx` (input NHWC
float32 BGR 0-255 `[batch, 96, 96, 3]`, output the probabilities, sigmoid inside, one per row
of) `selected_tags.csv`; and a manifest: the scripts' hash, the seed, the budget, the loss
curve, the seconds, the held-out accuracy (world seeds 10_000-10_049, both styles, 256 px) and
the bundled drawings' (data/samples, data/style_refs), and the model's sha256.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from kshd.fileio import atomic_dir
from kshd_world import world_tags
from kshd_world.samples import SAMPLES, SEED, sample_character
from kshd_world.world import STYLES, character, draw
from kshd_world.world_sd import Curve, _lr

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
MANIFEST, MODEL, TAGS = "manifest.json", "model.onnx", "selected_tags.csv"
SIZE = 96  # the ONNX input's side: hair, eyes (4 px at 96) and clothes stay readable
THRESHOLD = 0.35  # kohya's --thresh default, at which the accuracy is measured
TRAIN_SEEDS = 100_000  # far from the judges' 0-199, the samples' 5508+, the held-out 10_000+
HELD_OUT = range(10_000, 10_050)  # as tests/test_world.py's; each in both styles
WIDTHS = (16, 32, 32, 48)  # conv widths, each halving the side: 96 -> 6
SCRIPTS = ("kshd_world/world.py", "kshd_world/world_tags.py", "kshd_world/world_tagger.py")
# drawing sizes as the artist's folders have them (the samples have 256x320 and 320x256)
LAYOUTS = ((256, 256),) * 4 + ((128, 128), (192, 192), (256, 320), (320, 256))
TRANSPARENT = 0.25


@dataclass(frozen=True)
class Budget:
    characters: int  # each drawn in both styles
    steps: int
    batch: int
    lr: float


FULL = Budget(characters=2000, steps=1000, batch=32, lr=3e-3)
SMOKE = Budget(characters=24, steps=40, batch=8, lr=3e-3)


def scripts_hash() -> str:
    h = hashlib.sha256()
    for name in SCRIPTS:
        h.update(name.encode() + b"\0" + (ROOT / "src" / name).read_bytes())
    return h.hexdigest()


def names() -> list[str]:
    return [row[1] for row in world_tags.selected_tags()]


def targets(attributes: dict[str, str]) -> np.ndarray:
    """The label vector in selected_tags.csv's order: rating `general`, the general tags."""
    on = world_tags.tags_of(attributes) | {"general"}
    return np.array([n in on for n in names()], dtype=np.float32)


def training_drawing(seed: int, style: str) -> tuple[Image.Image, dict[str, str]]:
    """A character of the seed as the artist's files come: a layout and maybe transparent
    (its background is then white, as kohya composites it)."""
    rng = random.Random(f"world-tagger-{seed}-{style}")
    size, transparent = rng.choice(LAYOUTS), rng.random() < TRANSPARENT
    c = character(seed)
    attrs = c.attributes() | ({"background": "white"} if transparent else {})
    return draw(c, style, size, transparent), attrs


def training_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(preprocessed drawings as uint8 NHWC BGR, targets) of n characters in both styles."""
    images, labels = [], []
    seeds = range(TRAIN_SEEDS, TRAIN_SEEDS + n)
    for seed in tqdm(seeds, desc="drawing the world", unit="character", mininterval=5):
        for style in STYLES:
            img, attrs = training_drawing(seed, style)
            images.append(world_tags.wd_preprocess(img, SIZE).astype(np.uint8))
            labels.append(targets(attrs))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


class TaggerNet(torch.nn.Module):
    """Conv-BN-ReLU-maxpool blocks and a linear head over the 6x6 map (the world's characters
    stand where they stand, so where a colour is says what it is)."""

    def __init__(self, n_tags: int, size: int = SIZE, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        c = 3
        for w in widths:
            layers += [torch.nn.Conv2d(c, w, 3, padding=1, bias=False), torch.nn.BatchNorm2d(w),
                       torch.nn.ReLU(), torch.nn.MaxPool2d(2)]  # fmt: skip
            c = w
        self.features = torch.nn.Sequential(*layers)
        side = size // 2 ** len(widths)
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(c * side**2, n_tags))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: NHWC BGR 0-255, as WD v3 taggers take it."""
        return self.head(self.features(x.permute(0, 3, 1, 2) / 255.0).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def train(seed: int, budget: Budget) -> tuple[TaggerNet, Curve]:
    """The tagger and its loss curve (binary cross-entropy per tag), from one seed."""
    x, y = training_data(budget.characters)
    torch.manual_seed(seed)
    net = TaggerNet(y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=budget.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    curve, start = Curve(every=max(1, budget.steps // 50)), time.perf_counter()
    bar = tqdm(range(budget.steps), desc="training the tagger", unit="step", mininterval=5)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(budget.lr, step, budget.steps, warmup=min(100, budget.steps // 10))
        idx = torch.randint(0, len(x), (budget.batch,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net.logits(x[idx].float()), y[idx]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.add(step, loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    log.info("trained %d steps in %.0f s", budget.steps, time.perf_counter() - start)
    return net.eval(), curve


def export(net: TaggerNet, path: Path) -> None:
    """ONNX as SmilingWolf's: input `input` [batch, SIZE, SIZE, 3], output `output`."""
    dummy = torch.zeros(1, SIZE, SIZE, 3)
    torch.onnx.export(
        net, (dummy,), str(path), input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17,
        dynamo=False,
    )  # fmt: skip


def held_out(n: int = len(HELD_OUT)) -> list[tuple[Image.Image, dict[str, str]]]:
    """World drawings the tagger never saw: seeds 10_000 on, 256 px, both styles."""
    return [(draw(character(s), style), character(s).attributes())
            for s in HELD_OUT[:n] for style in STYLES]  # fmt: skip


def bundled(root: Path = ROOT) -> list[tuple[Image.Image, dict[str, str]]]:
    """The demo's bundled drawings and their attributes: data/samples (a transparent ground
    is a white background once composited) and data/style_refs (`ksh-<seed>.png`)."""
    out = []
    for i, sample in enumerate(SAMPLES):
        c = sample_character(sample, SEED + i)
        c = dataclasses.replace(c, background="white") if sample.transparent else c
        out.append((Image.open(root / "data/samples" / sample.name), c.attributes()))
    for path in sorted((root / "data/style_refs").glob("ksh-*.png")):
        out.append((Image.open(path), character(int(path.stem.split("-")[1])).attributes()))
    return out


def measure(folder: Path, drawings: list[tuple[Image.Image, dict[str, str]]]) -> dict:
    """The folder's accuracy (`world_tags.accuracy` at THRESHOLD) through onnxruntime."""
    tagger = world_tags.OnnxTagger(folder)
    probs = tagger.probabilities([im for im, _ in drawings])
    attrs = [a for _, a in drawings]
    return world_tags.accuracy(probs, attrs, tagger.names, tagger.categories, THRESHOLD)


def build(out: Path, seed: int, budget: Budget) -> dict:
    """Train, export and measure the tagger; write `out` with its csv and manifest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared; and one thread's sums are reproducible
    try:
        start = time.perf_counter()
        net, curve = train(seed, budget)
        seconds = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(threads)
    with atomic_dir(out) as tmp:
        export(net, tmp / MODEL)
        world_tags.write_selected_tags(tmp / TAGS)
        manifest = {
            "scripts_sha256": scripts_hash(), "seed": seed, "budget": asdict(budget),
            "torch": torch.__version__, "input_size": SIZE, "threshold": THRESHOLD,
            "parameters": sum(p.numel() for p in net.parameters()), "loss": curve.points,
            "train_seconds": seconds,
            "accuracy": {"held_out": measure(tmp, held_out()), "bundled": measure(tmp, bundled())},
            "model_sha256": hashlib.sha256((tmp / MODEL).read_bytes()).hexdigest(),
        }  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.info("world tagger: %s", {k: v for k, v in manifest.items() if k != "loss"})
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the tagger's folder (model.onnx, selected_tags.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps (the tests' run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, args.seed, SMOKE if args.smoke else FULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
