"""LoRA training on an SDXL base: the tiny SDXL (two CLIP encoders on the real
tokenizer, a text_time UNet) trains through the same loop as SD 1.x, with both encoders'
states, the pooled text and the size conditioning; cached and live training agree; a
v-prediction base with zero terminal SNR trains on its own schedule; the LoRA saves in
diffusers' and kohya's SDXL formats, which draw the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from safetensors import safe_open

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE, KohyaInfo, save_adapter
from kshd.adapters.registry import build_adapter
from kshd.config.compose import defaults
from kshd.config.errors import UserError
from kshd.training.batches import DrawingDataset, ItemOptions, Plan, size_condition
from kshd.training.components import load_components
from kshd.training.loop import train_lora

pytestmark = pytest.mark.slow

TRIGGER = "drawn by KSH drawing style"
BASE = dict(resolution=64, batch_size=2, epochs=2, learning_rate=1e-2, seed=3, random_flip=True)


def _split(sizes: list[tuple[int, int]]):
    images = [Image.new("RGB", size, (40 * i % 255, 90, 160)) for i, size in enumerate(sizes)]
    texts = [f"an anime girl, tag {i}, {TRIGGER}" for i in range(len(sizes))]
    features = Features({"image": ImageFeature(), "text": Value("string")})
    return Dataset.from_dict({"image": images, "text": texts}, features=features)


def test_size_conditioning_names_the_original_the_crop_and_the_target():
    # a 100x80 drawing resized to 80x64 for a 64x64 crop 7 px from the left, 0 from the top
    plain = size_condition((100, 80), Plan(7, 0, False, (64, 64)))
    assert plain.tolist() == [80, 100, 0, 7, 64, 64]  # (h, w), (top, left), (h, w)
    # flipped, the same pixels lie 80 - 7 - 64 = 9 px from the left
    assert size_condition((100, 80), Plan(7, 0, True, (64, 64))).tolist() == [80, 100, 0, 9, 64, 64]


def test_sdxl_items_carry_both_tokenizers_ids_and_their_size(tiny_models):
    c = load_components(str(tiny_models["sdxl"]), unet=False)
    assert c.text_encoder_2 is not None and len(c.tokenizers) == 2
    opts = ItemOptions.from_settings(defaults("train", **BASE, center_crop=True), keep_tag=TRIGGER)
    ds = DrawingDataset(_split([(80, 64)]), c.tokenizers, opts)
    item = ds[0]
    assert item["input_ids"].shape == item["input_ids_2"].shape == (1, 77)
    assert item["time_ids"].tolist()[:2] == [64, 80] and item["time_ids"].tolist()[4:] == [64, 64]
    sd1 = DrawingDataset(_split([(80, 64)]), c.tokenizer, opts)[0]
    assert "time_ids" not in sd1 and "input_ids_2" not in sd1


def _train(folder, tmp_path, model: dict | None = None, **kw):
    """`model`: load_components' model.* settings; `kw`: train.* settings."""
    s = defaults("train", **{**BASE, **kw})
    c = load_components(str(folder), **(model or {}))
    split = _split([(64, 64), (80, 64), (64, 80), (64, 64)])
    return c, train_lora(c, split, s, cache_dir=tmp_path / "cache", keep_tag=TRIGGER)


def test_cached_and_live_sdxl_training_see_the_same_inputs(tiny_models, tmp_path):
    """Cached latents and both encoders' cached outputs (with the pooled text) train exactly as
    the VAE and the encoders run every step: the same losses."""
    _, cached = _train(tiny_models["sdxl"], tmp_path, center_crop=True)
    _, live = _train(tiny_models["sdxl"], tmp_path, center_crop=True, cache_latents=False)
    assert cached.latents["cached"] == 4 and live.latents == {}
    losses = [h["loss"] for h in cached.history]
    assert losses == pytest.approx([h["loss"] for h in live.history], rel=1e-4)
    assert len(losses) == 4 and all(np.isfinite(losses))
    texts = list((tmp_path / "cache").glob("text-*-*/*.safetensors"))  # both encoders' hashes
    assert len(texts) == 4
    with safe_open(texts[0], "pt") as f:
        assert set(f.keys()) == {"hidden", "pooled"}
        assert f.get_tensor("hidden").shape == (77, 80) and f.get_tensor("pooled").shape == (32,)


def test_a_vpred_zero_terminal_snr_base_trains_on_its_own_schedule(tiny_models, tmp_path):
    vpred = {"prediction_type": "v_prediction", "zero_terminal_snr": True}
    c, result = _train(tiny_models["sdxl"], tmp_path, vpred, snr_gamma=5.0)
    sched = c.noise_scheduler.config
    assert sched.prediction_type == "v_prediction" and sched.rescale_betas_zero_snr
    assert c.noise_scheduler.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-6)
    assert all(np.isfinite([h["loss"] for h in result.history]))
    with pytest.raises(UserError, match=r"train\.prediction_type=epsilon.*zero_terminal_snr"):
        _train(tiny_models["sdxl"], tmp_path, vpred, prediction_type="epsilon")


def _draw(pipe) -> np.ndarray:
    return pipe(
        f"an anime girl, {TRIGGER}", num_inference_steps=2, height=64, width=64, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images[0]  # fmt: skip


def test_the_sdxl_lora_saves_for_diffusers_and_kohya_and_both_draw_the_same(tiny_models, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    c, result = _train(tiny_models["sdxl"], tmp_path, train_text_encoder=True, rank=4, alpha=2)
    info = KohyaInfo(base_model="tiny-sdxl", resolution=64, trigger=TRIGGER, steps=result.steps,
                     epochs=2, batch_size=2, learning_rate=1e-2, num_images=4, seed=3,
                     train_text_encoder=True, sdxl=True)  # fmt: skip
    lora = build_adapter(defaults("train.adapter"), 4, 2)
    save_adapter(tmp_path / "lora", lora, info, c.unet, c.text_encoder, c.text_encoder_2)
    with safe_open(tmp_path / "lora" / KOHYA_FILE, "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    for prefix in ("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_"):
        assert any(k.startswith(prefix) and k.endswith(".lora_down.weight") for k in keys)
    # the UNet under its original (SGM) block names, as kohya's sdxl_train_network.py and A1111
    unet = {k for k in keys if k.startswith("lora_unet_")}
    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    assert all(k.startswith(sgm) for k in unet), sorted(unet)[:3]
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in unet
    with safe_open(tmp_path / "lora" / DIFFUSERS_FILE, "pt") as f:
        assert any(k.startswith("text_encoder_2.") for k in f.keys())  # noqa: SIM118

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_models["sdxl"], use_safetensors=True)
    base = _draw(pipe)
    pipe.load_lora_weights(tmp_path / "lora", weight_name=DIFFUSERS_FILE, adapter_name="d")
    tuned = _draw(pipe)
    assert np.abs(tuned - base).mean() > 1e-3  # the LoRA changes the drawing
    pipe.delete_adapters("d")
    assert np.abs(_draw(pipe) - base).max() < 1e-5
    pipe.load_lora_weights(tmp_path / "lora", weight_name=KOHYA_FILE, adapter_name="k")
    assert np.abs(_draw(pipe) - tuned).max() < 1e-4  # the kohya file draws the same


def test_a_killed_vpred_sdxl_training_resumes_bit_identical(tiny_models, ready_project, tmp_path):
    """The train stage on a v-prediction, zero-terminal-SNR SDXL base: SIGKILL after a
    checkpoint, rerun (a new process), and the LoRA equals an uninterrupted run's (this process)
    bit for bit."""
    import json

    from safetensors.torch import load_file

    from kshd.training.checkpoints import complete_checkpoints

    from .helpers.events import stop_at
    from .helpers.inprocess import run_stage_here
    from .stage_project import run_stage, stage_env

    args = [f"model.pretrained={tiny_models['sdxl']}", "model.prediction_type=v_prediction",
            "model.zero_terminal_snr=true", "train.epochs=4", "train.checkpointing_steps=3",
            "train.validation_epochs=2"]  # fmt: skip
    killed = tmp_path / "killed"
    straight = ready_project(killed, args)
    stop_at(killed, "train", "SIGKILL", r"log:checkpoint-6 saved", stage_env())
    assert complete_checkpoints(killed / "models/checkpoints")[-1][0] == 6
    run_stage(killed, "train")
    run_stage_here(straight, "train")
    metrics = json.loads((killed / "reports/train/metrics.json").read_text(encoding="utf-8"))
    assert metrics["resumed_from"] == "checkpoint-6" and metrics["steps"] == 16
    a, b = (load_file(str(p / "models/lora" / DIFFUSERS_FILE)) for p in (killed, straight))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"
    assert sorted(p.name for p in (killed / "reports/validation").glob("*.png")) == [
        "epoch-0002.png", "epoch-0004.png"
    ]  # fmt: skip
