"""Does training teach the style? Train a LoRA on the bundled KSH samples over the world's
pretrained plain base, draw held-out characters with and without it through the app's engine,
and judge every drawing from its pixels (kshd_world.world_judges, validated in test_world).

Shared by tests/test_learning.py (which asserts the thresholds below) and the benches that break
training on purpose (bench/mutations.py) or train far longer (bench/overfitting.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from kshd.adapters.files import KohyaInfo, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import compose_conf, defaults
from kshd.config.fill import as_plain
from kshd.data.caption_sources import read_overrides, read_sidecar
from kshd.data.captioning import with_trigger, write_info_csv
from kshd.data.dataset import build_dataset, load_rows
from kshd.data.images import IntakeRules
from kshd.data.intake import prepare_folder, prepare_reg_folder
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.request import Request
from kshd_world.world import character
from kshd_world.world_judges import judge_hair, judge_style

ROOT = Path(__file__).resolve().parents[2]
WORLD_SD = ROOT / "models/world/sd"
TRIGGER = "drawn by KSH drawing style"
RESOLUTION = 128
# Held-out characters (the judges' held-out seeds): none is a sample or in the pretraining data.
JUDGED = [character(s) for s in range(10_000, 10_008)]
SEEDS = (0, 1)
# The demo profile's LoRA run (conf/experiment/demo.yaml: LoCon, rank 16, lr 3e-3, batch 2, 25
# epochs of the samples and as many regularization drawings), here on all ten samples (no
# holdout) and the demo's ten plain drawings (reg_split): 250 steps.
_DEMO = compose_conf(["+experiment=demo"], conf_dir=ROOT / "conf")
_T = _DEMO.train
LEARN = dict(
    resolution=_T.resolution,
    batch_size=_T.batch_size,
    epochs=_T.epochs,
    learning_rate=_T.learning_rate,
    rank=_T.rank,
    alpha=_T.alpha,
    adapter=as_plain(_T.adapter),  # LoCon
    seed=7,
)
# The app's drawing at the demo's size and steps, prompted as the demo profile does (no prefixes:
# the world's CLIP text tower knows the trigger phrase at a caption's end, and no negative words).
DRAW = dict(
    positive_prefix="",
    negative_prompt="",
    negative_prefix="",
    width=RESOLUTION,
    height=RESOLUTION,
    steps=12,
    sampler=_DEMO.generate.sampler,
    batch_count=1,
    batch_size=1,
)


# Measured on the committed world, drawn with the demo's Euler a (2026-12-02): the base's drawings
# are judged KSH in 2 of 16, with the prompt's hair colour in 12 of 16 (chance: 1 in 6). The
# LoRA's, trained with the demo's regularization drawings: KSH in 15 of 16 with one process (fp32,
# cached inputs), 11 of 16 with two DDP processes (bf16, live inputs); hair in 8 and 7 of 16.
# Without the trigger phrase: KSH in 7 and 5 of 16 (hair 11 and 10). Trained on the samples alone
# (before data.reg_dir): 13 and 10 of 16 KSH, hair 10 and 9, and 13 of 16 without the trigger too.
# The bounds leave DDP two drawings of margin. An attention-only rank-4 LoRA (the demo's settings
# before) reached 6 of 16, and with dark blotches.
BASE_MAX_KSH = 0.2
LORA_MIN_KSH = 0.55  # at least 9 of 16
LORA_MIN_HAIR = 0.3  # at least 5 of 16
# KSH with the trigger phrase minus KSH without it: 8/16 and 6/16 measured
TRIGGER_MIN_GAIN = 0.25
# The std of the first trained batch's scaled latents (metrics.json's latent_std): 1.12-1.17 over
# three seeds on the samples; 1.86-1.94 with the VAE's scaling factor left out (x1 instead of
# 1/1.663). That breakage barely hurts the drawings in this world (bench/mutations.py), so it is
# checked here, on the latents themselves.
LATENT_STD = (0.75, 1.5)
# The mean loss of the first 5 steps: the base's own prediction error on the samples (the LoRA
# starts at zero), 0.12 / 0.48 / 0.29 at seeds 7 / 8 / 9. A LoRA trained on the wrong target (v
# for this noise-predicting base) starts at 1.44 / 1.21 / 1.24: with Euler a its drawings barely
# differ in this world, so the loss says it.
FIRST_LOSS_MAX = 0.8


def first_loss(losses: list[float]) -> float:
    """The mean loss of a run's first five steps."""
    return sum(losses[:5]) / len(losses[:5])


def intake(resolution: int) -> dict:
    """prepare_folder's arguments as the prepare stage passes them (conf/'s `prepare` group)."""
    p = defaults("prepare", resolution=resolution)
    rules = IntakeRules.from_settings(p)
    return dict(resolution=p.resolution, upscale=p.upscale, rules=rules)


def sample_split(work: Path, extra: list[tuple[str, str]] = ()):
    """The bundled samples at 128 px with their reviewed captions and the trigger phrase, as the
    caption stage writes them, as a `datasets` split; `extra`: more (path under work, caption)
    rows, taken as they are."""
    report = prepare_folder(
        ROOT / "data/samples", work / "prepared", **intake(resolution=RESOLUTION)
    )
    captions = read_overrides(ROOT / "data/sample_captions.csv")
    position = defaults("caption").trigger_position
    rows = [
        (f"prepared/{i['output']}", with_trigger(captions[i["file"]], TRIGGER, position))
        for i in report.images
    ]
    write_info_csv(work / "info.csv", [*rows, *extra])
    return build_dataset(load_rows(work / "info.csv"), holdout_fraction=0.0)["train"]


def reg_split(work: Path):
    """The demo's regularization drawings (data/sample_reg: plain drawings with .txt captions, no
    trigger) prepared and captioned as the stages do, as the dataset's `reg` split."""
    report = prepare_reg_folder(
        ROOT / _DEMO.data.reg_dir, work / "prepared", **intake(resolution=RESOLUTION)
    )
    rows = [
        (f"prepared/{i['output']}", read_sidecar(work / "prepared", i["output"]))
        for i in report.images
    ]
    write_info_csv(work / "reg_info.csv", rows)
    return build_dataset([], 0.0, reg=load_rows(work / "reg_info.csv"))["reg"]


@dataclass
class Verdict:
    """What the judges said of one set of drawings (same prompts and seeds across sets)."""

    images: list[Image.Image]
    ksh: float  # share judged KSH style
    hair: float  # share whose hair colour is the prompt's

    def __str__(self) -> str:
        return f"KSH {self.ksh:.0%}, hair {self.hair:.0%} of {len(self.images)}"


def judge_drawings(engine: Engine, lora_scale: float, trigger: bool = True) -> Verdict:
    """Each judged character drawn at each seed, prompted as the training captions are worded."""
    images, ksh, hair = [], 0, 0
    for c in JUDGED:
        prompt = with_trigger(c.caption(), TRIGGER, "end") if trigger else c.caption()
        for seed in SEEDS:
            req = Request(prompt, seed=seed, lora_scale=lora_scale, **DRAW)
            img = engine.generate(req, save=False).images[0]
            images.append(img)
            ksh += judge_style(img) == "ksh"
            hair += judge_hair(img) == c.hair
    return Verdict(images, ksh / len(images), hair / len(images))


def learn(split, work: Path, c=None, reg=None, **changes):
    """The demo's LoRA run (LEARN with `changes`) on `split` (and the `reg` split), latents and
    text cached under work/cache when the settings cache; `c`: components to train (loaded from
    the world's base if None). Returns (components, TrainResult)."""
    from accelerate.state import AcceleratorState

    from kshd.training.components import load_components
    from kshd.training.loop import train_lora

    c = c or load_components(str(WORLD_SD))
    s = defaults("train", **{**LEARN, **changes})
    AcceleratorState._reset_state()  # each run's Accelerator takes its own mixed precision
    try:
        cache = work / "cache" if s.cache_latents else None
        return c, train_lora(c, split, s, cache_dir=cache, reg_split=reg)
    finally:
        AcceleratorState._reset_state()


def save_learned(out: Path, c, result, num_images: int) -> Path:
    """A LEARN run's LoRA saved as the train stage saves it (both files, its rank and alpha)."""
    s = defaults("train", **LEARN)
    info = KohyaInfo(
        base_model="world",
        resolution=RESOLUTION,
        trigger=TRIGGER,
        steps=result.steps,
        epochs=result.epochs,
        batch_size=LEARN["batch_size"],
        learning_rate=LEARN["learning_rate"],
        num_images=num_images,
        seed=LEARN["seed"],
    )
    save_adapter(out, build_adapter(s.adapter, s.rank, s.alpha), info, c.unet, c.text_encoder)
    return out


def world_engine(lora: Path | None) -> Engine:
    return Engine(EngineSettings(str(WORLD_SD), lora=str(lora) if lora else None, device="cpu"))


def contact_sheet(rows: list[list[Image.Image]], path: Path) -> Path:
    """Rows of drawings side by side (a test's evidence, written next to its output)."""
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (w * max(map(len, rows)), h * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            sheet.paste(img.convert("RGB"), (x * w, y * h))
    sheet.save(path)
    return path


def unlike_the_app(c, cache: Path, captions: list[str]) -> list[str]:
    """The captions whose cached text states (what a cached run trained on) are not what the
    app draws with for the same caption (kshd.prompts.PromptEncoder); [] when all match. Text
    states from another CLIP layer barely show in this world's drawings (bench/mutations.py)."""
    import torch
    from safetensors.torch import load_file

    from kshd.prompts.encoding import PromptEncoder

    cached = [load_file(str(p))["hidden"] for p in sorted(cache.glob("text-*/*.safetensors"))]
    app, unlike = PromptEncoder(c.tokenizer, c.text_encoder, clip_skip=c.clip_skip), []
    for caption in sorted(set(captions)):
        with torch.no_grad():
            drawn = app.encode(caption)[0].float().cpu()
        if not any(t.shape == drawn.shape and torch.allclose(t, drawn, atol=1e-4) for t in cached):
            unlike.append(caption)
    return unlike
