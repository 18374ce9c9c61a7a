"""Aspect-ratio buckets: geometry, one size per batch, resumable order, cached = live."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kshd.config.compose import defaults
from kshd.data.captioning import write_info_csv
from kshd.data.dataset import build_dataset, load_rows
from kshd.training.batches import BucketBatchSampler, make_buckets, pick_bucket
from kshd.training.components import load_components
from kshd.training.loop import train_lora


def test_buckets_cover_aspects_within_the_pixel_budget():
    buckets = make_buckets(512, 64, 2.0)
    assert (512, 512) in buckets and (384, 640) in buckets and (640, 384) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert all(max(w, h) / min(w, h) <= 2.0 for w, h in buckets)
    assert pick_bucket((2000, 1200), buckets)[0] > pick_bucket((2000, 1200), buckets)[1]
    assert pick_bucket((1200, 2000), buckets)[0] < pick_bucket((1200, 2000), buckets)[1]
    assert pick_bucket((2000, 2000), buckets) == (512, 512)


def test_bucket_batches_hold_one_size_cover_everything_and_resume():
    targets = [(64, 64)] * 5 + [(48, 80)] * 4 + [(80, 48)] * 3
    sampler = BucketBatchSampler(targets, batch_size=2, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(len({targets[i] for i in b}) == 1 for b in batches)
    assert len(batches) == 3 + 2 + 2 == len(sampler)
    sampler.skip_once(4)
    assert list(sampler) == batches[4:] and list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


@pytest.fixture(scope="module")
def mixed_split(tmp_path_factory):
    work = tmp_path_factory.mktemp("mixed")
    (work / "prepared").mkdir()
    rows = []
    for i, size in enumerate([(64, 64), (64, 64), (96, 48), (96, 48), (48, 96), (48, 96)]):
        arr = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(work / "prepared" / f"{i}.png")
        rows.append((f"prepared/{i}.png", f"drawing {i}, drawn by KSH drawing style"))
    write_info_csv(work / "info.csv", rows)
    return build_dataset(load_rows(work / "info.csv"), 0.0)["train"]


def test_bucketed_training_caches_every_item_and_matches_live(tiny_models, mixed_split, tmp_path):
    base = dict(
        resolution=64,
        batch_size=2,
        epochs=2,
        learning_rate=1e-2,
        seed=5,
        buckets=True,
        bucket_step=16,
    )
    losses, stats = {}, {}
    for cached in (False, True):
        result = train_lora(
            load_components(str(tiny_models["sd"])),
            mixed_split,
            defaults("train", **base, cache_latents=cached),
            cache_dir=tmp_path if cached else None,
        )
        losses[cached] = [h["loss"] for h in result.history]
        stats[cached] = result.latents
    assert len(losses[True]) == 2 * 3  # three buckets of two drawings, two epochs
    assert stats[True]["live"] == 0 and stats[True]["cached"] == 6
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)
    sizes = {p.name.rsplit("-", 1)[1] for p in tmp_path.glob("latents-*/*.safetensors")}
    assert sizes == {"64x64.safetensors", "80x48.safetensors", "48x80.safetensors"}
