"""A tiny CLIP trained contrastively on the demo world, so the demo's metrics mean something.

The evaluate stage scores prompt alignment (clip_score) and style (style_similarity) with a CLIP;
random weights make both noise. This one learns the world's styles and caption words from
pairs: each character's *plain* drawing with its caption and its *ksh* drawing with the caption
plus the trigger phrase (as the caption stage puts it), from a pool of seeds from 20_000 on,
away from the held-out 10_000-10_199. `WorldClipJudge` reads style and hair with it, zero-shot.
`python -m kshd_world.world_clip OUT --steps N --seed S` writes OUT and clip-stats.json beside.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from kshd.fileio import atomic_dir
from kshd_world.world import HAIR, STYLES, character, draw

log = logging.getLogger(__name__)

POOL_FIRST_SEED = 20_000  # training characters: far from the held-out 10_000-10_199
POOL_SIZE = 3000  # characters, each drawn in both styles
DRAW_SIZE = 128  # the demo's resolution
IMAGE_SIZE = 64  # what the image processor resizes to: 8x8 patches of 8 px
HELD_OUT = range(10_000, 10_100)  # as tests/test_world.py: never in the pool nor tuning
PROTOTYPE_SEEDS = range(0, 200)  # the tuning seeds: whose captions make the text prototypes
# The text tower stays narrow: the 49,408-token embedding is most of the file (2.4 of 2.7 MB).
# Special-token ids as openai/clip-vit-large-patch14's config (pooling at the highest id).
TEXT = dict(hidden_size=24, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
TEXT |= dict(max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)
VISION |= dict(image_size=IMAGE_SIZE, patch_size=8)
PROJECTION_DIM = 64
STEPS = 500  # 4.5 min on one shared core; held-out style and hair 100 %
LR, WARMUP, LOG_EVERY = 2e-3, 30, 25


def trigger_caption(caption: str) -> str:
    """The KSH caption as the caption stage writes it (conf's trigger phrase and position)."""
    from kshd.config.compose import defaults
    from kshd.data.captioning import with_trigger

    conf = defaults("caption")
    return with_trigger(caption, conf.trigger_phrase, conf.trigger_position)


def blurred_noisy(img: Image.Image, seed: int) -> Image.Image:
    """A drawing as a generator might draw it: soft edges, pixel noise (as tests/test_world)."""
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1)), np.float32)
    arr = arr + np.random.default_rng(seed).normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _new_model_and_processor(seed: int) -> tuple:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from kshd_world.clip_bpe import clip_bpe_tokenizer

    tok = clip_bpe_tokenizer()
    text = TEXT | {"vocab_size": len(tok)}
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=PROJECTION_DIM)
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=square)
    torch.manual_seed(seed)
    return CLIPModel(config), CLIPProcessor(image_processor=images, tokenizer=tok)


def _pool(processor, n: int) -> tuple[torch.Tensor, list[str]]:
    """Pixel values (fp16, to halve the memory) and captions; row 2i plain, 2i+1 ksh of seed i."""
    pixels, captions = [], []
    for start in range(0, n, 250):
        imgs = []
        for seed in range(POOL_FIRST_SEED + start, POOL_FIRST_SEED + min(n, start + 250)):
            c = character(seed)
            imgs += [draw(c, "plain", (DRAW_SIZE,) * 2), draw(c, "ksh", (DRAW_SIZE,) * 2)]
            captions += [c.caption(), trigger_caption(c.caption())]
        pixels.append(processor(images=imgs, return_tensors="pt")["pixel_values"].half())
    return torch.cat(pixels), captions


def _augment(px: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the batch blurred (random sigma) and all with random pixel noise: generated images
    are softer and noisier than the drawings, and the judge must read those too."""
    b, conv = px.shape[0], torch.nn.functional.conv2d
    sigma = torch.rand(b, 1, generator=gen).clamp(min=0.05)
    k = torch.softmax(-(torch.arange(-2.0, 3.0)[None] ** 2) / (2 * sigma**2), 1)
    k[torch.rand(b, generator=gen) >= 0.5] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    # separable blur, one kernel per image: the batch folded into channels
    kh = k.repeat_interleave(3, 0)[:, None, None, :]
    flat = conv(px.reshape(1, b * 3, *px.shape[2:]), kh, padding=(0, 2), groups=b * 3)
    flat = conv(flat, kh.transpose(2, 3), padding=(2, 0), groups=b * 3)
    noise = torch.rand(b, 1, 1, 1, generator=gen) * 0.15
    return flat.reshape(px.shape) + noise * torch.randn(px.shape, generator=gen)


def train_world_clip(
    out_dir: Path,
    seed: int,
    steps: int,
    batch_size: int = 128,
    pool_size: int = POOL_SIZE,
    held_out: Sequence[int] = HELD_OUT,
) -> dict:
    """Train the world's CLIP from scratch, deterministically from `seed`, on `pool_size`
    characters; save it in fp16 to out_dir (atomically). Returns the stats: time, loss curve,
    accuracies on the `held_out` seeds' drawings, clean and blurred+noisy (none if empty).

    Runs on one CPU thread: the same bits on any machine, and on 2 cores shared with other jobs
    a step took 0.65 s with one thread against 4 s with two (they wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(Path(out_dir), seed, steps, batch_size, pool_size, held_out)
    finally:
        torch.set_num_threads(threads)


def _train(
    out_dir: Path, seed: int, steps: int, batch_size: int, pool_size: int, held_out: Sequence[int]
) -> dict:
    start = time.perf_counter()
    model, processor = _new_model_and_processor(seed)
    pixels, captions = _pool(processor, pool_size)
    log.info("drew %d pairs in %.1f s", len(captions), time.perf_counter() - start)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine to 0
        opt, lambda s: min(1, (s + 1) / WARMUP) * 0.5 * (1 + np.cos(np.pi * s / steps))
    )
    curve, running = [], []
    for step in range(1, steps + 1):
        # both styles of each character in the batch: the trigger is the only text difference
        chars = rng.choice(pool_size, size=min(batch_size // 2, pool_size), replace=False)
        rows = np.stack([2 * chars, 2 * chars + 1], 1).reshape(-1)
        text = processor.tokenizer([captions[i] for i in rows], padding=True, return_tensors="pt")
        px = _augment(pixels[torch.from_numpy(rows)].float(), gen)
        loss = model(**text, pixel_values=px, return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % LOG_EVERY == 0 or step == steps:
            curve.append([step, round(float(np.mean(running)), 4)])
            log.info("step %d/%d loss %.3f", step, steps, curve[-1][1])
            running = []
    with atomic_dir(out_dir) as tmp:
        from kshd_world.clip_bpe import write_clip_bpe_files

        # fp16 weights (half the file) under an fp32 config: from_pretrained computes in fp32
        half = {k: v.half() for k, v in model.state_dict().items()}
        model.save_pretrained(tmp, safe_serialization=True, state_dict=half)
        processor.save_pretrained(tmp)
        write_clip_bpe_files(tmp)
    stats = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "pool": [POOL_FIRST_SEED, POOL_FIRST_SEED + pool_size],
        "train_seconds": round(time.perf_counter() - start, 1),  # drawing, training, saving
        "loss_curve": curve,
        "file_bytes": (out_dir / "model.safetensors").stat().st_size,
    }
    if held_out:  # the seeds' drawings in both styles, as drawn and as a generator might
        judge = WorldClipJudge(out_dir)
        stats["held_out_clean"] = judge.accuracy(held_out)
        stats["held_out_blurred_noisy"] = judge.accuracy(held_out, blurred_noisy)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    log.info("world CLIP: %s", json.dumps({k: v for k, v in stats.items() if k != "loss_curve"}))
    return stats


class WorldClipJudge:
    """Style and hair of images by the world's CLIP, through the evaluate stage's ClipEncoder.

    Given the caption an image was drawn from, zero-shot on its 12 variants (with and without
    the trigger phrase, x each hair colour): the closest one names the style and the hair.
    Measured 100 % on held-out drawings, clean or blurred and noisy; hair judged on variants
    without the trigger was 87 % on KSH drawings (the trigger is part of how they look).
    Without captions, by text prototypes: the mean embedding of the tuning seeds' captions that
    name each class (a prompt ensemble); weaker (98 % style, 85 % hair), in the stats."""

    def __init__(self, model_dir: str | Path) -> None:
        from kshd.evaluation.metrics import ClipEncoder

        self.encoder = ClipEncoder(str(model_dir), batch_size=64)
        self._protos: list[torch.Tensor] = []

    def judge(
        self, images: Sequence[Image.Image], captions: Sequence[str] | None = None
    ) -> list[dict[str, str]]:
        """{'style': 'plain'|'ksh', 'hair': colour} for each image; `captions` are the prompts
        the images were drawn from (with or without the trigger: it is taken off)."""
        emb = _unit(self.encoder.images(images))
        if captions is None:
            style, hair = ((emb @ p.T).argmax(1) for p in self._prototypes())
        else:
            texts = [
                f(_with_hair(plain_caption(cap), h))
                for cap in captions
                for f in (str, trigger_caption)  # the order of STYLES
                for h in HAIR
            ]
            t = _unit(self.encoder.texts(texts)).reshape(len(images), 2 * len(HAIR), -1)
            best = (t @ emb[:, :, None]).squeeze(-1).argmax(1)
            style, hair = best // len(HAIR), best % len(HAIR)
        colours = list(HAIR)
        return [
            {"style": STYLES[s], "hair": colours[h]}
            for s, h in zip(style.tolist(), hair.tolist(), strict=True)
        ]

    def _prototypes(self) -> list[torch.Tensor]:
        """Unit prototypes of the styles and of the hair colours (computed once)."""
        if not self._protos:
            plain = [character(s).caption() for s in PROTOTYPE_SEEDS]
            groups = [
                [plain, [trigger_caption(t) for t in plain]],
                [[_with_hair(t, h) for t in plain] for h in HAIR],
            ]
            self._protos = [
                _unit(torch.stack([_unit(self.encoder.texts(p)).mean(0) for p in prompts]))
                for prompts in groups
            ]
        return self._protos

    def accuracy(
        self, seeds: Sequence[int], degrade: Callable[[Image.Image, int], Image.Image] | None = None
    ) -> dict[str, float]:
        """Style and hair accuracy on the seeds' drawings in both styles (2 * len(seeds) images,
        each optionally degraded as `degrade(image, seed)`), judged with their plain captions;
        `*_no_caption`: judged by the prototypes."""
        images, truth, captions = [], [], []
        for style in STYLES:
            for seed in seeds:
                c = character(seed)
                img = draw(c, style, (DRAW_SIZE,) * 2)
                images.append(degrade(img, seed) if degrade else img)
                truth.append({"style": style, "hair": c.hair})
                captions.append(c.caption())
        out = {}
        for suffix, caps in (("", captions), ("_no_caption", None)):
            got = self.judge(images, caps)
            for k in ("style", "hair"):
                right = sum(g[k] == t[k] for g, t in zip(got, truth, strict=True))
                out[k + suffix] = right / len(images)
        return out


def plain_caption(caption: str) -> str:
    """The caption without the trigger phrase, wherever the caption stage put it."""
    from kshd.config.compose import defaults

    trigger = defaults("caption").trigger_phrase
    return caption.removesuffix(f", {trigger}").removeprefix(f"{trigger}, ")


def _with_hair(caption: str, hair: str) -> str:
    """The caption naming another hair colour (or naming one, if it names none)."""
    pattern = r"\b(" + "|".join(HAIR) + r") hair\b"
    swapped, n = re.subn(pattern, f"{hair} hair", caption)
    return swapped if n else f"{caption}, {hair} hair"


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def main(argv: list[str] | None = None) -> int:
    """`python -m kshd_world.world_clip OUT --steps N --seed S`: train, save, write stats."""
    p = argparse.ArgumentParser(prog="python -m kshd_world.world_clip", description=__doc__)
    p.add_argument("out", type=Path, help="folder to write the CLIP into")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2 or args.batch_size % 2:
        p.error("--steps must be at least 1 and --batch-size even and at least 2")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stats = train_world_clip(args.out, args.seed, args.steps, args.batch_size)
    stats_path = args.out.parent / "clip-stats.json"
    stats_path.write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s and %s", args.out, stats_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
