"""The demo world's pretrained models: the committed weights are what the script made,
the script still runs, and the base draws plain-style characters that follow the prompt."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kshd.training.components import load_components
from kshd_world import pretrain_world
from kshd_world.learning import judge_drawings, world_engine

ROOT = Path(__file__).resolve().parent.parent
WORLD = ROOT / "models/world"
BASE_MAX_KSH = 0.25
BASE_MIN_HAIR = 0.45
MANIFEST = json.loads((WORLD / pretrain_world.MANIFEST).read_text(encoding="utf-8"))


def _dtypes(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (not a dict)


def test_committed_weights_are_what_the_manifest_says():
    """Every weight file's sha256 as recorded by the run that made it, by the scripts as they
    are now (edit world.py or a trainer and this fails until `make world-models` is rerun)."""
    assert pretrain_world.weight_hashes(WORLD) == MANIFEST["weights_sha256"]
    assert len(MANIFEST["weights_sha256"]) == 4  # unet, vae, text encoder; CLIP
    assert pretrain_world.scripts_hash() == MANIFEST["scripts_sha256"]
    assert MANIFEST["budget"] == asdict(pretrain_world.FULL)
    total = sum(p.stat().st_size for p in WORLD.rglob("*.safetensors"))
    assert total < 12_000_000, total  # measured 11.1 MB: the "at most ~10 MB"
    assert all(_dtypes(p) == {"F16"} for p in WORLD.rglob("*.safetensors"))


def test_the_manifest_records_losses_that_fell():
    """The loss curves of the committed run: each part learned (its running loss at the end
    is under half its first; measured: see the manifest)."""
    for part in ("vae", "unet"):
        curve = MANIFEST[part]["loss"]
        assert curve[-1][1] < curve[0][1] / 2, (part, curve[0], curve[-1])
    clip = MANIFEST["clip"]["loss_curve"]
    assert clip[-1][1] < clip[0][1] / 2


@pytest.mark.slow
@pytest.mark.alone  # the script's own processes and thread counts (2 for the UNet)
def test_a_few_steps_of_each_part_write_a_loadable_world(tmp_path):
    """The script end to end (the --smoke budget): both folders load through from_pretrained in
    fp32 from fp16 files, the VAE's scaling factor is the measured latent spread, and the
    manifest lists every weight file."""
    assert pretrain_world.main([str(tmp_path / "w"), "--smoke", "--seed", "3"]) == 0
    manifest = json.loads((tmp_path / "w" / pretrain_world.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["budget"] == asdict(pretrain_world.SMOKE)
    assert manifest["weights_sha256"] == pretrain_world.weight_hashes(tmp_path / "w")
    c = load_components(str(tmp_path / "w/sd"))
    assert {p.dtype for p in c.unet.parameters()} == {torch.float32}
    assert c.vae.config.scaling_factor == pytest.approx(1 / manifest["vae"]["latent_std"], rel=1e-4)
    assert not (tmp_path / "w/sd/tokenizer/tokenizer.json").exists()
    ids = c.tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's real BPE, as SD 1.x's
    # SD's text encoder is the CLIP's text tower, as SD 1.x's is OpenAI CLIP's
    clip = (tmp_path / "w/clip/model.safetensors").read_bytes()
    assert c.text_encoder.config.hidden_size == c.unet.config.cross_attention_dim == 24
    # --reuse trains only a new UNet over the earlier CLIP and VAE, and says so
    assert (
        pretrain_world.main([str(tmp_path / "r"), "--smoke", "--reuse", str(tmp_path / "w")]) == 0
    )
    again = json.loads((tmp_path / "r" / pretrain_world.MANIFEST).read_text(encoding="utf-8"))
    assert (tmp_path / "r/clip/model.safetensors").read_bytes() == clip
    assert again["vae"]["reused_from_scripts_sha256"] == manifest["scripts_sha256"]
    assert again["vae"]["loss"] == manifest["vae"]["loss"]


@pytest.mark.slow
def test_the_base_draws_plain_characters_that_follow_the_prompt():
    """Eight held-out characters at two seeds each, prompted with the trigger phrase as the
    evaluation prompts are: the base knows no KSH style and follows hair colour.
    Measured on the committed weights: judged KSH in 2 of 16 (dark smudges), hair right in 10
    of 16 (chance: 1 in 6); the bounds leave a drawing's margin on each side."""
    verdict = judge_drawings(world_engine(None), lora_scale=1.0)
    assert verdict.ksh <= BASE_MAX_KSH, verdict
    assert verdict.hair >= BASE_MIN_HAIR, verdict
