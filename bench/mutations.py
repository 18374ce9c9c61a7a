"""Break training or drawing on purpose and show the learning test notices.

Each mutation trains the demo's LoRA on the samples over the world's base (as tests/test_learning
does) with one defect, draws the same held-out characters, and prints what the judges say next to
the test's thresholds. A mutation the test would not catch prints CAUGHT no.

    python bench/mutations.py                 # all, ~1.5 min each on 2 CPU cores
    python bench/mutations.py latent_scale    # one
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from kshd.training.components import load_components
from kshd_world import learning
from kshd_world.learning import (
    BASE_MAX_KSH,
    FIRST_LOSS_MAX,
    LATENT_STD,
    LORA_MIN_HAIR,
    LORA_MIN_KSH,
    WORLD_SD,
    first_loss,
)

log = logging.getLogger("mutations")


def _no_mutation(c, changes):
    return c, changes


def _latent_scale(c, changes):
    """Latents trained without the VAE's scaling factor (x1 instead of 1/std)."""
    c.vae.register_to_config(scaling_factor=1.0)
    return c, changes


def _prediction_type(c, changes):
    """The LoRA trained to predict v while the base (and the app) predict the noise."""
    return c, {**changes, "prediction_type": "v_prediction"}


def _penultimate(text_encoder, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """encode_chunk_ids from the wrong layer: the penultimate hidden states without the final
    layer norm (neither clip skip 1 nor A1111's 2), whatever `clip_skip` asks."""
    b, k, n = ids.shape
    out = text_encoder(ids.reshape(b * k, n), output_hidden_states=True)
    hidden = out.hidden_states[-2]
    return hidden.reshape(b, k * n, hidden.shape[-1])


def _text_layer(c, changes):
    """Training's text states taken from the wrong layer of CLIP (the app draws with the last)."""
    from kshd.training import components, latent_cache

    latent_cache.encode_chunk_ids = components.encode_chunk_ids = _penultimate
    return c, changes


BEFORE_TRAINING: dict[str, Callable] = {
    "none": _no_mutation,
    "latent_scale": _latent_scale,
    "prediction_type": _prediction_type,
    "text_layer": _text_layer,
}


def _shrink_lora(unet) -> None:
    """A LoRA saved at a tenth of its trained scale (lora_B x 0.1)."""
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.mul_(0.1)


def _train(name: str, split, work: Path):
    """The demo's run with the mutation `name` applied before training (undone after): its
    components, its TrainResult and the captions whose cached text states are not the app's."""
    from kshd.training import components, latent_cache

    saved = latent_cache.encode_chunk_ids, components.encode_chunk_ids
    try:
        c, changes = BEFORE_TRAINING.get(name, _no_mutation)(load_components(str(WORLD_SD)), {})
        reg = learning.reg_split(work / "data")
        c, result = learning.learn(split, work, c, reg, **changes)
    finally:
        latent_cache.encode_chunk_ids, components.encode_chunk_ids = saved
    return c, result, learning.unlike_the_app(c, work / "cache", split["text"])


def run(name: str, work: Path) -> dict:
    split = learning.sample_split(work / "data")
    c, result, text_unlike = _train(name, split, work)
    if name == "lora_scale":
        _shrink_lora(c.unet)
    learning.save_learned(work / "lora", c, result, len(split))
    engine = learning.world_engine(work / "lora")
    if name == "lora_not_applied":
        engine.set_lora_scale = lambda scale: engine.txt2img.disable_lora()
    lora = learning.judge_drawings(engine, lora_scale=1.0)
    std, loss = result.latent_std, first_loss([h["loss"] for h in result.history])
    drawn = lora.ksh < LORA_MIN_KSH or lora.hair < LORA_MIN_HAIR
    caught = drawn or not LATENT_STD[0] <= std <= LATENT_STD[1] or loss > FIRST_LOSS_MAX
    caught = caught or bool(text_unlike)
    learning.contact_sheet([lora.images], work.parent / f"{name}.png")
    return {"mutation": name, "ksh": lora.ksh, "hair": lora.hair, "std": std, "loss": loss} | {
        "text_unlike": len(text_unlike),
        "caught": caught,
    }


MUTATIONS = ["none", "latent_scale", "lora_scale", "prediction_type", "text_layer"]
MUTATIONS += ["lora_not_applied"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*MUTATIONS, []], help="default: all")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="mutations-")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = learning.judge_drawings(learning.world_engine(None), lora_scale=1.0)
    log.info("base: %s (the test wants base KSH <= %.0f%%)", base, 100 * BASE_MAX_KSH)
    log.info(
        "caught: LoRA KSH < %.0f%% or hair < %.0f%% or latent std outside %s or first loss > %s"
        " or a cached text state unlike the app's",
        100 * LORA_MIN_KSH,
        100 * LORA_MIN_HAIR,
        LATENT_STD,
        FIRST_LOSS_MAX,
    )
    for name in args.names or MUTATIONS:
        r = run(name, args.out / name)
        log.info(
            "%-18s KSH %4.0f%%  hair %4.0f%%  latent std %.2f  first loss %.2f  "
            "text unlike the app %d  CAUGHT %s",
            name,
            100 * r["ksh"],
            100 * r["hair"],
            r["std"],
            r["loss"],
            r["text_unlike"],
            "yes" if r["caught"] else "no",
        )
    log.info("contact sheets in %s", args.out)


if __name__ == "__main__":
    main()
