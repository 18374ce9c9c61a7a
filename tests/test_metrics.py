"""Metric sanity checks that can fail: identical, shuffled, noise and copied sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kshd.evaluation import metrics as m
from kshd.evaluation.metrics import ClipEncoder

from .conftest import ROOT


def test_identical_sets_and_copies():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 16, generator=g)
    same = a[:1].repeat(5, 1)
    assert m.style_similarity(same, same) == pytest.approx(1.0, abs=1e-6)
    assert m.memorization(a, a) == pytest.approx(1.0, abs=1e-6)  # each is its own copy
    assert m.diversity([same]) == pytest.approx(0.0, abs=1e-6)
    assert m.clip_score(a, a) == pytest.approx(1.0, abs=1e-6)


def test_unrelated_sets_score_lower():
    g = torch.Generator().manual_seed(1)
    style = torch.randn(1, 16, generator=g)
    drawings = style + 0.3 * torch.randn(8, 16, generator=g)  # one style, small variations
    noise = torch.randn(8, 16, generator=g)
    assert m.style_similarity(drawings, drawings) > m.style_similarity(noise, drawings) + 0.3
    assert m.memorization(drawings, drawings) > m.memorization(noise, drawings)
    shuffled = drawings[torch.randperm(8, generator=g)]
    assert m.clip_score(drawings, drawings) > m.clip_score(drawings, shuffled)
    assert m.diversity([noise]) > m.diversity([drawings]) > 0


def test_real_images_through_a_clip_encoder(tiny_models):
    enc = ClipEncoder(str(tiny_models["clip"]))
    samples = [Image.open(p) for p in sorted((ROOT / "data/samples").glob("*.png"))]
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(6)]
    emb, noise_emb = enc.images(samples), enc.images(noise)
    assert emb.shape == (10, 16)
    assert m.memorization(emb, emb) == pytest.approx(1.0, abs=1e-5)
    assert m.memorization(noise_emb, emb) < 1.0
    assert m.diversity([enc.images([samples[0]] * 3)]) == pytest.approx(0.0, abs=1e-5)
    assert enc.texts(["a", "drawn by KSH drawing style"]).shape == (2, 16)
