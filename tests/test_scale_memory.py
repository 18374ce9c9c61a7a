"""Memory that must not grow with the number of drawings (5,700 for the real artist).

Counted, not timed: the Python bytes alive while the dataset is built (tracemalloc sees them),
and the decoded images alive while evaluation embeds the training drawings.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from kshd.data.dataset import save_dataset
from kshd_world.samples import noise_drawings


def _drawings(root: Path, n: int) -> Path:
    """n noise PNGs (incompressible: ~12 KB each at 64 px) and their info.csv."""
    return noise_drawings(root, n, 64)


def _peak_building(tmp_path: Path, n: int) -> tuple[int, int]:
    """(peak traced bytes while saving the dataset, total image bytes)."""
    info = _drawings(tmp_path / f"n{n}", n)
    total = sum(p.stat().st_size for p in (tmp_path / f"n{n}" / "prepared").iterdir())
    tracemalloc.start()
    try:
        save_dataset(info, tmp_path / f"n{n}" / "ds", 0.05, "drawn by KSH drawing style")
        return tracemalloc.get_traced_memory()[1], total
    finally:
        tracemalloc.stop()


def test_building_the_dataset_does_not_hold_every_image(tmp_path, monkeypatch):
    import datasets

    # datasets writes in row groups of at most 100 MB (a bound, not growth with N); shrunk here
    # so that these few MB of drawings span several, as 5,700 real ones (~2 GB) would
    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", "1MB")
    _peak_building(tmp_path, 3)  # imports and first-call caches are not the drawings
    small, small_bytes = _peak_building(tmp_path, 150)
    large, large_bytes = _peak_building(tmp_path, 600)
    # 450 more drawings (~5 MB more image bytes): the peak may grow by the table of names, not
    # by the images (holding them all would add their bytes, and more)
    assert large - small < 0.25 * (large_bytes - small_bytes), (small, large, large_bytes)


class _CountingProcessor:
    """Wraps an image processor: records how many decoded images are alive at each call."""

    def __init__(self, processor):
        self.processor, self.peak, self.calls = processor, 0, 0
        self.before = self._alive()  # other tests' images (session fixtures) are not ours

    @staticmethod
    def _alive() -> int:
        gc.collect()
        return sum(isinstance(o, Image.Image) for o in gc.get_objects())

    def __call__(self, *args, **kwargs):
        alive = self._alive() - self.before
        self.peak, self.calls = max(self.peak, alive), self.calls + 1
        return self.processor(*args, **kwargs)


@pytest.mark.parametrize("n", [8, 32])
def test_memorization_embeds_the_training_drawings_in_batches_from_disk(tmp_path, tiny_models, n):
    from kshd.evaluation.metrics import ClipEncoder
    from kshd.stages.evaluate import dataset_images

    save_dataset(_drawings(tmp_path, n), tmp_path / "ds", 0.0, "drawn by KSH drawing style")
    holdout, train = dataset_images(str(tmp_path / "ds"))
    assert len(train) == n and len(holdout) == 0
    encoder = ClipEncoder(str(tiny_models["clip"]), batch_size=4)
    counting = _CountingProcessor(encoder.processor)
    encoder.processor = counting
    emb = encoder.images(train)
    assert emb.shape[0] == n and counting.calls == n // 4
    assert counting.peak <= 2 * 4, f"{counting.peak} decoded images alive at once for {n}"


def test_the_reported_peak_is_the_process_own_not_its_parents():
    """A stage or bench worker started by a large process (DVC, a bench, this test runner)
    reports its own peak memory: getrusage's ru_maxrss would report the parent's at fork."""
    import subprocess
    import sys

    ballast = bytearray(1500 << 20)
    ballast[:: 1 << 12] = b"\1" * len(range(0, len(ballast), 1 << 12))  # 1.5 GB resident here
    code = (
        "import resource; from kshd.training.result import peak_rss_mb; "
        "print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, inherited = map(float, out.stdout.split())
    assert inherited > 1500  # the kernel's figure carries this process's ballast over exec
    assert own < 1000  # the child imported torch, nothing of the parent's
    del ballast
