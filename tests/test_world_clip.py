"""The demo world's CLIP: the training script, its fp16 folder, and its judge.

The judge is measured on held-out seeds 10_000-10_099 (never in the training pool, which starts
at 20_000, nor among the tuning seeds 0-199 whose captions make the prototypes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kshd.evaluation.metrics import ClipEncoder, clip_score, style_similarity
from kshd_world.world import HAIR, character, draw
from kshd_world.world_clip import (
    HELD_OUT,
    WorldClipJudge,
    blurred_noisy,
    main,
    plain_caption,
    train_world_clip,
    trigger_caption,
)

ROOT = Path(__file__).resolve().parent.parent
WORLD_CLIP = ROOT / "models/world/clip"
MAX_BYTES = 3_500_000


def _tensors_dtypes(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (not a dict)


def test_a_few_steps_write_an_fp16_folder_that_the_metrics_load_in_fp32(tmp_path):
    """The script end to end on a pool of 8 characters: fp16 on disk, fp32 through ClipEncoder
    (the evaluate stage's loader), finite embeddings, the same bytes from the same seed, and
    the judge's answer in its form (the held-out accuracies are the slow test's)."""
    stats = train_world_clip(tmp_path / "clip0", 1, 3, 8, pool_size=8, held_out=())
    train_world_clip(tmp_path / "clip1", 1, 3, 8, pool_size=8, held_out=())
    assert [s for s, _ in stats["loss_curve"]] == [3] and stats["file_bytes"] <= MAX_BYTES
    assert "held_out_clean" not in stats
    weights = [(tmp_path / f"clip{i}/model.safetensors").read_bytes() for i in range(2)]
    assert weights[0] == weights[1]
    assert _tensors_dtypes(tmp_path / "clip0/model.safetensors") == {"F16"}
    enc = ClipEncoder(str(tmp_path / "clip0"))
    assert enc.model.dtype == torch.float32
    c = character(HELD_OUT[0])
    drawing = draw(c, "ksh", (128, 128))
    img, txt = enc.images([drawing]), enc.texts([c.caption()])
    assert img.shape == txt.shape == (1, 64)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    (got,) = WorldClipJudge(tmp_path / "clip0").judge([drawing], [trigger_caption(c.caption())])
    assert got["style"] in ("plain", "ksh") and got["hair"] in HAIR


def test_cli_writes_the_stats_beside_the_folder(tmp_path, monkeypatch):
    calls = []

    def fake_train(out_dir, seed, steps, batch_size):
        calls.append((out_dir, seed, steps, batch_size))
        return {"steps": steps}

    monkeypatch.setattr("kshd_world.world_clip.train_world_clip", fake_train)
    assert main([str(tmp_path / "clip"), "--steps", "7", "--seed", "3"]) == 0
    assert calls == [(tmp_path / "clip", 3, 7, 128)]
    assert (tmp_path / "clip-stats.json").read_text(encoding="utf-8") == '{\n "steps": 7\n}\n'


def test_captions_with_and_without_the_trigger():
    caption = character(5).caption()
    assert trigger_caption(caption) == f"{caption}, drawn by KSH drawing style"
    assert plain_caption(trigger_caption(caption)) == plain_caption(caption) == caption


@pytest.mark.slow
def test_judge_on_200_held_out_drawings_clean_andblurred_noisy():
    """Measured 2026-11-29 on the folder built by `python -m kshd_world.world_clip
    models/world/clip --seed 0` (500 steps): style 200/200 and hair 200/200, clean and blurred
    + noisy (tests/test_world's degradation); an earlier 500-step run (other augmentation
    rounding) too. Threshold 0.9: 20 mistakes of margin, as the analytic judges' test. Without
    captions (text prototypes): style 98 %, hair 85 % clean and 84.5 % blurred; only style is
    held to 0.9 there."""
    judge = WorldClipJudge(WORLD_CLIP)
    assert _tensors_dtypes(WORLD_CLIP / "model.safetensors") == {"F16"}
    assert (WORLD_CLIP / "model.safetensors").stat().st_size <= MAX_BYTES
    for degrade in (None, blurred_noisy):
        acc = judge.accuracy(HELD_OUT, degrade)
        assert acc["style"] >= 0.9 and acc["hair"] >= 0.9, (degrade, acc)
        assert acc["style_no_caption"] >= 0.9, acc


@pytest.mark.slow
def test_clip_score_prefers_the_right_caption_and_style_similarity_the_right_style():
    """What the evaluate stage reads, on 40 held-out characters. Measured: clip_score of KSH
    drawings with their own caption 0.59, with a neighbour's -0.15 (plain drawings: 0.95, the
    captions without trigger being theirs); style_similarity KSH-KSH 0.16, KSH-plain -0.09."""
    enc = ClipEncoder(str(WORLD_CLIP))
    chars = [character(s) for s in HELD_OUT[:40]]
    ksh = enc.images([draw(c, "ksh", (128, 128)) for c in chars])
    plain = enc.images([draw(c, "plain", (128, 128)) for c in chars])
    texts = enc.texts([c.caption() for c in chars])
    assert clip_score(ksh, texts) > clip_score(ksh, texts.roll(1, 0)) + 0.3
    assert clip_score(plain, texts) > clip_score(ksh, texts)
    assert style_similarity(ksh, ksh) > style_similarity(ksh, plain) + 0.1
