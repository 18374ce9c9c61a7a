"""All inputs cached: the VAE and text encoder leave memory; validation brings them back."""

from __future__ import annotations

import numpy as np
import torch

from kshd.config.compose import defaults
from kshd.evaluation.evaluate import validation_images
from kshd.training.components import load_components
from kshd.training.loop import train_lora

from .helpers.settings import PLAIN

# center_crop: every sample is cacheable, so no step needs the VAE or the text encoder
SETTINGS = dict(resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=3, center_crop=True)


def _on_meta(module: torch.nn.Module) -> bool:
    return all(p.device.type == "meta" for p in module.parameters())


def _train(tiny_models, split, cache_dir, release: bool):
    c = load_components(str(tiny_models["sd"]))
    if not release:
        c.source = None  # nowhere to reload from: kept in memory, as before
    seen, images = [], []

    def on_log(row):
        seen.append((_on_meta(c.vae), _on_meta(c.text_encoder)))

    def validate(epoch, parts):
        assert not _on_meta(parts.vae) and not _on_meta(parts.text_encoder)
        images.append(np.asarray(validation_images(parts, "a girl", "", (0,), 3, 64, **PLAIN)[0]))

    s = defaults("train", **SETTINGS, validation_epochs=1)
    result = train_lora(c, split, s, on_log=on_log, cache_dir=cache_dir, validate=validate)
    return c, result, seen, images


def test_cached_run_releases_the_vae_and_text_encoder(tiny_models, sample_split, tmp_path):
    c, released, seen, images = _train(tiny_models, sample_split, tmp_path / "cache", True)
    assert seen and all(vae and te for vae, te in seen)  # every step ran without them
    assert not _on_meta(c.vae) and not _on_meta(c.text_encoder)  # complete again afterwards
    _, kept, seen_kept, images_kept = _train(tiny_models, sample_split, tmp_path / "cache", False)
    assert not any(vae or te for vae, te in seen_kept)
    assert [h["loss"] for h in released.history] == [h["loss"] for h in kept.history]
    assert len(images) == 2 and all(
        np.array_equal(a, b) for a, b in zip(images, images_kept, strict=True)
    )


def test_live_crops_keep_the_vae(tiny_models, sample_split, tmp_path):
    c = load_components(str(tiny_models["sd"]))
    seen = []
    s = defaults("train", **{**SETTINGS, "center_crop": False, "epochs": 1})
    train_lora(c, sample_split, s, on_log=lambda row: seen.append(_on_meta(c.vae)),
               cache_dir=tmp_path / "cache")  # fmt: skip
    assert seen and not any(seen)  # random crops of non-square drawings are encoded live


def test_deferred_unet_loads_after_the_release_and_trains_the_same(
    tiny_models, sample_split, tmp_path, monkeypatch
):
    """As the train stage loads: the UNet comes in only once the VAE and text encoder left."""
    import kshd.training.loop
    from kshd.adapters.registry import build_adapter

    s = defaults("train", **SETTINGS)
    eager = load_components(str(tiny_models["sd"]))
    expected = train_lora(eager, sample_split, s, cache_dir=tmp_path / "cache")
    c = load_components(str(tiny_models["sd"]), unet=False)
    assert c.unet is None
    real, order = kshd.training.loop.load_unet, []

    def load_unet(*source):
        order.append((_on_meta(c.vae), _on_meta(c.text_encoder)))
        return real(*source)

    monkeypatch.setattr(kshd.training.loop, "load_unet", load_unet)
    got = train_lora(c, sample_split, s, cache_dir=tmp_path / "cache", give_back=False)
    assert order == [(True, True)]
    assert _on_meta(c.vae) and _on_meta(c.text_encoder)  # left released, as asked
    assert [h["loss"] for h in got.history] == [h["loss"] for h in expected.history]
    lora = build_adapter(s.adapter, s.rank, s.alpha)
    want, have = lora.tensors(eager.unet), lora.tensors(c.unet)
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
