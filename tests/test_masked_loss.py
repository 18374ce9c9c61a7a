"""The alpha-masked loss (`train.masked_loss`, kohya's --masked_loss): a drawing's alpha is kept
through prepare (`<name>.alpha.png` beside the composited drawing), the dataset (an RGBA `image`)
and the latent cache (on the latent grid, cut as the latents), and weighs the loss, so the LoRA
learns the drawn character and not the ground it was composited onto."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file

from kshd.config.compose import defaults
from kshd.data.captioning import write_info_csv
from kshd.data.dataset import build_dataset, load_rows
from kshd.data.images import alpha_path, flatten
from kshd.data.intake import prepare_folder
from kshd.training.batches import DrawingDataset, ItemOptions, collate
from kshd.training.checkpoints import fingerprint
from kshd.training.components import load_components
from kshd.training.latent_cache import LatentSource
from kshd.training.loop import train_lora
from kshd.training.loss import diffusion_loss

from .helpers.loss import seeded_loss
from .helpers.settings import intake

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
OPAQUE = ("boy_school.png", "girl_twintails.png")  # the samples saved without alpha
RUN = dict(resolution=64, batch_size=2, epochs=1, learning_rate=1e-2, seed=7)


def _striped(size: int = 64) -> Image.Image:
    """Red, opaque in columns 0-31, half transparent in 32-47, transparent in 48-63 (its colour
    there is noise, which compositing removes)."""
    rgba = np.random.default_rng(0).integers(0, 256, (size, size, 4), dtype=np.uint8)
    rgba[:, :48, :3] = (200, 30, 30)
    rgba[:, :32, 3], rgba[:, 32:48, 3], rgba[:, 48:, 3] = 255, 128, 0
    return Image.fromarray(rgba, "RGBA")


def _split(raw: Path, work: Path, resolution: int = 64):
    """raw -> prepared -> info.csv -> the dataset's train split, as the stages do it."""
    report = prepare_folder(raw, work / "prepared", **intake(resolution=resolution))
    rows = [
        (f"prepared/{i['output']}", "a drawing, drawn by KSH drawing style") for i in report.images
    ]
    write_info_csv(work / "info.csv", rows)
    return build_dataset(load_rows(work / "info.csv"), holdout_fraction=0.0)["train"], report


def _train(tiny_models, split, cache: Path | None, **changes) -> tuple[dict, list]:
    c = load_components(str(tiny_models["sd"]))
    result = train_lora(c, split, defaults("train", **RUN | changes), cache_dir=cache)
    lora = {n: p.detach().clone() for n, p in c.unet.named_parameters() if "lora_" in n}
    return lora, [r["loss"] for r in result.history]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepare_keeps_the_alpha_beside_the_drawing_its_report_and_holdout_unchanged(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _striped().save(raw / "striped.png")
    Image.new("RGBA", (64, 64), (0, 90, 200, 255)).save(raw / "opaque_rgba.png")
    shutil.copy(SAMPLES / OPAQUE[0], raw / "rgb.png")
    split, report = _split(raw, tmp_path)
    assert set(report.to_dict()) == {"inputs", "accepted", "rejected", "duplicates",
                                     "duplicate_of", "animated", "sidecars", "images"}  # fmt: skip
    assert report.accepted == 3 and all(
        set(i) == {"file", "output", "digest"} for i in report.images
    )
    out = {i["file"]: tmp_path / "prepared" / i["output"] for i in report.images}
    drawing = Image.open(out["striped.png"])
    assert drawing.mode == "RGB" and drawing.getpixel((60, 5)) == (255, 255, 255)
    # prepare's drawing is today's: the source composited on white (no resize at 64 px)
    today = io.BytesIO()
    flatten(Image.open(raw / "striped.png"), (255, 255, 255)).save(today, format="PNG")
    assert out["striped.png"].read_bytes() == today.getvalue()
    alpha = np.asarray(Image.open(alpha_path(out["striped.png"])))
    assert alpha.shape == (64, 64) and (alpha[:, :32] == 255).all() and (alpha[:, 48:] == 0).all()
    assert (alpha[:, 32:48] == 128).all()
    assert not alpha_path(out["opaque_rgba.png"]).exists()  # opaque alpha: none kept
    assert not alpha_path(out["rgb.png"]).exists()
    # the dataset's image: RGBA whose RGB is the prepared drawing's pixels, byte for byte
    images = split.cast_column("image", ImageFeature(decode=False))["image"]
    by_name = {image["path"]: image["bytes"] for image in images}
    stored = Image.open(io.BytesIO(by_name[out["striped.png"].name]))
    assert stored.mode == "RGBA" and stored.convert("RGB").tobytes() == drawing.tobytes()
    assert np.array_equal(np.asarray(stored)[..., 3], alpha)
    assert by_name[out["rgb.png"].name] == out["rgb.png"].read_bytes()  # untouched without alpha
    # the holdout is chosen by the prepared drawing's bytes alone, as before
    for row in load_rows(tmp_path / "info.csv"):
        assert row["digest"] == hashlib.sha256(row["file"].read_bytes()).hexdigest()
    # a ground made opaque white composites alike (same name) but its alpha is rewritten
    rgba = np.array(_striped())
    rgba[:, 48:] = 255
    Image.fromarray(rgba, "RGBA").save(raw / "striped.png")
    again = prepare_folder(raw, tmp_path / "prepared", **intake(resolution=64))
    assert again.images == report.images
    assert (np.asarray(Image.open(alpha_path(out["striped.png"])))[:, 48:] == 255).all()


def _dataset(split, tokenizer, masked: bool, latents=None) -> DrawingDataset:
    """The training items as the loop builds them (train.masked_loss as given)."""
    s = defaults("train", **RUN | {"masked_loss": masked})
    opts = ItemOptions.from_settings(s, "drawn by KSH drawing style")
    return DrawingDataset(split, tokenizer, opts, latents, mask_factor=8 if masked else None)


@pytest.fixture
def tokenizer(tiny_models):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tiny_models["sd"]), subfolder="tokenizer")


@pytest.fixture
def striped_split(tmp_path):
    """A striped drawing with alpha and an opaque sample, through prepare and the dataset."""
    raw = tmp_path / "raw"
    raw.mkdir()
    _striped().save(raw / "striped.png")
    shutil.copy(SAMPLES / OPAQUE[0], raw / "rgb.png")
    split, report = _split(raw, tmp_path)
    order = [i["file"] for i in report.images]
    return split, order.index("striped.png"), order.index("rgb.png")


def test_the_mask_reaches_the_latent_cache_on_the_latent_grid(
    striped_split, tokenizer, tiny_models, tmp_path
):
    split, striped, rgb = striped_split
    vae = load_components(str(tiny_models["sd"]), unet=False).vae
    masked = LatentSource(vae, tmp_path / "cache", torch.device("cpu"), mask_factor=8)
    plain = LatentSource(vae, tmp_path / "cache", torch.device("cpu"))
    ds = _dataset(split, tokenizer, True, masked)
    masked.precompute(ds)
    tensors = load_file(str(masked._path(ds, striped)))
    expected = torch.tensor([1.0] * 4 + [128 / 255] * 2 + [0.0] * 2).expand(1, 8, 8)
    assert tensors["mask"].shape == (1, 8, 8) and torch.allclose(tensors["mask"], expected)
    assert torch.equal(tensors["mask_flip"], tensors["mask"].flip(-1))
    # the key: a masked entry for the drawing with alpha, the shared one for the one without
    assert masked._path(ds, striped) != plain._path(ds, striped)
    assert masked._path(ds, striped).name.endswith("-alpha.safetensors")
    assert masked._path(ds, rgb) == plain._path(ds, rgb)
    assert "mask" not in load_file(str(masked._path(ds, rgb)))
    # cached and live items carry the same mask; the opaque drawing none
    live = _dataset(split, tokenizer, True)
    for epoch in range(4):  # both flips
        ds.set_epoch(epoch), live.set_epoch(epoch)
        assert torch.equal(ds[striped]["mask"], live[striped]["mask"])
        assert "mask" not in ds[rgb] and "mask" not in live[rgb]
    assert "mask" not in _dataset(split, tokenizer, False)[striped]  # masked_loss=false
    # a batch mixing both: the drawing without alpha is weighted by ones
    batch = collate([ds[striped], ds[rgb]])
    assert batch["mask"].shape == (2, 1, 8, 8) and (batch["mask"][1] == 1).all()


def test_the_mask_is_cut_with_the_drawing(tmp_path, tokenizer):
    """A wide drawing's random crops and flips (encoded live): the mask is the area average of
    the very pixels the crop keeps, wherever it falls."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rgba = np.zeros((64, 160, 4), dtype=np.uint8)
    for x in range(0, 160, 12):  # opaque red blocks of uneven spacing
        rgba[(x % 5) * 8 : (x % 5) * 8 + 24, x : x + 5 + x % 7] = (220, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(raw / "wide.png")
    split, _ = _split(raw, tmp_path)
    ds = _dataset(split, tokenizer, True)
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        red = (item["pixel_values"][1] < 0).float()[None, None]  # green < 127.5: drawn
        assert torch.allclose(item["mask"], F.avg_pool2d(red, 8)[0], atol=1e-6)


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_where_the_mask_is_zero_the_model_s_output_does_not_matter(
    tiny_models, snr_gamma, prediction_type
):
    """Whatever the UNet predicts on the transparent half, the loss and every gradient are the
    same bit for bit (with min-SNR, v-prediction and per-drawing weights); unmasked they are not.
    """
    c = load_components(str(tiny_models["sd"]), prediction_type=prediction_type)
    s = defaults("train", snr_gamma=snr_gamma)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    hidden = torch.randn(2, 77, c.text_encoder.config.hidden_size)
    mask = torch.ones(2, 1, 8, 8)
    mask[..., 5:] = 0.0
    mask[1, :, :, 3:5] = 0.5
    weights = torch.tensor([1.0, 0.7])  # a regularization drawing's prior_loss_weight

    class Garbled(torch.nn.Module):  # the UNet, with noise added where the mask is zero
        def __init__(self, unet, scale):
            super().__init__()
            self.unet, self.scale = unet, scale

        def forward(self, *args, **kwargs):
            out = self.unet(*args, **kwargs)[0]
            noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
            return (out + self.scale * noise * (mask == 0),)

    def step(scale: float, m):
        c.unet.zero_grad()
        torch.manual_seed(0)
        loss = diffusion_loss(c, latents, hidden, Garbled(c.unet, scale), s, weights, None, m)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in c.unet.parameters() if p.grad is not None]

    (l0, g0), (l1, g1) = step(0.0, mask), step(50.0, mask)
    assert torch.equal(l0, l1) and all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    (u0, _), (u1, _) = step(0.0, None), step(50.0, None)
    assert not torch.equal(u0, u1)


def test_the_mask_weighs_as_kohya_s_mean_not_renormalised(tiny_models):
    """kohya multiplies the per-element loss by the mask and takes the mean: a drawing half as
    opaque everywhere counts half (a sum(mask) normalisation would count it whole)."""
    c = load_components(str(tiny_models["sd"]))
    s = defaults("train")
    latents = torch.randn(2, 4, 8, 8)
    hidden = torch.randn(2, 77, c.text_encoder.config.hidden_size)

    def loss(mask):
        return seeded_loss(c, s, latents, hidden, mask=mask)

    plain = loss(None)
    assert loss(torch.ones(2, 1, 8, 8)) == pytest.approx(plain, rel=1e-6)
    assert loss(torch.full((2, 1, 8, 8), 0.5)) == pytest.approx(0.5 * plain, rel=1e-6)
    assert loss(torch.zeros(2, 1, 8, 8)) == 0.0
    # a mask at pixel size is area-resized to the latent grid, as kohya's apply_masked_loss
    assert loss(torch.full((2, 1, 64, 64), 0.5)) == pytest.approx(0.5 * plain, rel=1e-6)


def _noisy_ground(src: Path, dst: Path, seed: int) -> None:
    """The samples, with noise of `seed` as the colour of every fully transparent pixel."""
    dst.mkdir()
    rng = np.random.default_rng(seed)
    for f in sorted(src.glob("*.png")):
        img = Image.open(f)
        if img.mode != "RGBA":
            shutil.copy(f, dst / f.name)
            continue
        rgba = np.array(img)
        clear = rgba[..., 3] == 0
        rgba[clear, :3] = rng.integers(0, 256, (int(clear.sum()), 3), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(dst / f.name)


def test_where_only_the_fully_transparent_ground_differs_training_is_identical(
    tmp_path, tiny_models
):
    """The samples with different noise under alpha 0 prepare to the same files and train, masked,
    bit for bit alike; the mask changes what the samples train (it is in effect)."""
    splits = []
    for seed in (1, 2):
        work = tmp_path / f"set{seed}"
        _noisy_ground(SAMPLES, tmp_path / f"raw{seed}", seed)
        splits.append(_split(tmp_path / f"raw{seed}", work)[0])
        assert len(list((work / "prepared").glob("*.alpha.png"))) == 8
    files = [sorted((tmp_path / f"set{s}" / "prepared").iterdir()) for s in (1, 2)]
    assert [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]]
    a, loss_a = _train(tiny_models, splits[0], tmp_path / "cache1", masked_loss=True)
    b, loss_b = _train(tiny_models, splits[1], tmp_path / "cache2", masked_loss=True)
    assert _same(a, b) and loss_a == loss_b
    unmasked, _ = _train(tiny_models, splits[0], tmp_path / "cache1", masked_loss=False)
    assert not _same(a, unmasked)


def test_drawings_without_alpha_train_as_before(tmp_path, tiny_models):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in OPAQUE:
        shutil.copy(SAMPLES / name, raw / name)
    split, _ = _split(raw, tmp_path)
    assert not list((tmp_path / "prepared").glob("*.alpha.png"))
    for cache in (tmp_path / "cache", None):  # cached latents and live encoding
        masked = _train(tiny_models, split, cache, masked_loss=True, epochs=2)
        plain = _train(tiny_models, split, cache, masked_loss=False, epochs=2)
        assert _same(masked[0], plain[0]) and masked[1] == plain[1]


def test_the_run_s_fingerprint_names_the_masked_loss_only_when_on():
    off, on = defaults("train"), defaults("train", masked_loss=True)
    assert "masked_loss" not in off.defining() and on.defining()["masked_loss"] is True
    assert fingerprint(settings=off.defining()) != fingerprint(settings=on.defining())


@pytest.mark.slow
def test_sdxl_with_buckets_trains_masked_and_caches_the_mask_at_the_bucket_s_grid(
    tiny_models, tmp_path
):
    """A wide drawing with alpha in an aspect-ratio bucket on the tiny SDXL: its mask has the
    bucket's latent grid, and cached and live training agree (the same losses)."""
    from datasets import Dataset, Features, Value

    rgba = np.full((64, 128, 4), 255, dtype=np.uint8)
    rgba[:, 64:, 3] = 0  # the right half transparent
    drawings = [Image.fromarray(rgba, "RGBA"), Image.new("RGB", (64, 64), (40, 90, 160))]
    features = Features({"image": ImageFeature(), "text": Value("string")})
    texts = ["an anime girl, drawn by KSH drawing style"] * 2
    split = Dataset.from_dict({"image": drawings, "text": texts}, features=features)
    # buckets (48, 80), (64, 64), (80, 48): the 128x64 drawing is cut to 80x48 (latents 10x6)
    run = RUN | dict(buckets=True, bucket_step=16, batch_size=1, masked_loss=True)
    losses = []
    for cache in (True, False):
        c = load_components(str(tiny_models["sdxl"]))
        s = defaults("train", **run | {"cache_latents": cache})
        result = train_lora(c, split, s, cache_dir=tmp_path / "cache")
        losses.append([h["loss"] for h in result.history])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4) and all(np.isfinite(losses[0]))
    [entry] = (tmp_path / "cache").glob("latents-*/*-alpha.safetensors")
    mask = load_file(str(entry))["mask"]
    assert mask.shape == (1, 6, 10)  # resized to 96x48, 8 px cut each side: opaque to x = 40
    assert torch.allclose(mask[..., :4], torch.ones(1)) and torch.allclose(
        mask[..., 6:], torch.zeros(1)
    )
