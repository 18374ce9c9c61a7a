"""Settings for tests, built from the project's defaults (kshd.config.compose.defaults: params.yaml,
composed from conf/) with what a test changes written out: no default hides in code."""

from __future__ import annotations

from kshd.config.compose import defaults
from kshd.data.images import IntakeRules
from kshd.evaluation.sampling import SampleSettings

# Drawn without the app's prefixes and with the pipeline's own scheduler: tests that compare
# against a plain diffusers pipeline, or do not care how the app words a prompt.
PLAIN = dict(positive_prefix="", negative_prefix="", sampler="")
# Small and quick: two seeds, two steps, 64 px, one LoRA strength, no negative prompt.
QUICK_EVAL = dict(
    seeds=(0, 1),
    num_inference_steps=2,
    resolution=64,
    lora_scales=(1.0,),
    negative_prompt="",
    **PLAIN,
)


def sample_settings(trigger_phrase: str = "", **changes) -> SampleSettings:
    """The `evaluate` group's drawing settings from conf/ with `changes` (checked as config
    keys), as the evaluate stage builds them."""
    return SampleSettings.from_settings(defaults("evaluate", **changes), trigger_phrase)


def intake_rules(**changes) -> IntakeRules:
    """What an acceptable drawing is, from conf/'s `prepare` group with `changes`."""
    return IntakeRules.from_settings(defaults("prepare", **changes))


def intake(**changes) -> dict:
    """prepare_folder's keyword arguments (resolution, upscale, rules) as the prepare stage
    passes them, from conf/'s `prepare` group with `changes`."""
    p = defaults("prepare", **changes)
    return dict(resolution=p.resolution, upscale=p.upscale, rules=intake_rules(**changes))


def assert_trains_and_draws(c, split, s, cache_dir, size: int, draw_steps: int) -> None:
    """The shape smoke tests' check: `s`'s steps train the LoRA (its B matrices leave zero,
    finite losses), then one validation image of `size` px draws (NaN latents decode flat)."""
    import numpy as np

    from kshd.evaluation.sampling import validation_images
    from kshd.training.loop import train_lora

    result = train_lora(c, split, s, cache_dir=cache_dir)
    assert result.steps == s.max_train_steps and all(np.isfinite(h["loss"]) for h in result.history)
    lora = [p for n, p in c.unet.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # B starts at zero: trained
    prompt = "drawn by KSH drawing style, a cat"
    (image,) = validation_images(c, prompt, "", (0,), draw_steps, size, **PLAIN)
    pixels = np.asarray(image, dtype=np.float32)
    assert image.size == (size, size) and np.isfinite(pixels).all() and pixels.std() > 0
