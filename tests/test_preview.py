"""Live previews while drawing (`drawing.preview`): A1111's Approx cheap numbers, TAESD from a
folder on disk, the engine's preview every N steps at the drawing's size (none, and nothing
computed, at 0), and each batch handed over, saved, as it ends."""

from __future__ import annotations

import pytest
import torch

from kshd.config.compose import defaults
from kshd.config.schema_generate import PreviewSettings
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.preview import cheap_rgb, previewer, to_picture
from kshd.drawing.request import Request
from kshd.models.family import SD1, SDXL

DRAW = dict(steps=4, width=64, height=96, sampler="euler", seed=7, positive_prefix="",
            negative_prefix="")  # fmt: skip


def _latent(values: tuple[float, ...]) -> torch.Tensor:
    """A 1x4x2x2 latent of one value per channel."""
    return torch.tensor(values).reshape(1, 4, 1, 1).expand(1, 4, 2, 2).clone()


def test_cheap_preview_is_a1111_s_approx_cheap_for_each_family():
    """(1, -1, 0.5, 2) through A1111's coefficients, x 0.5 + 0.5, x 255, clamped: SD 1.x gives
    R = 0.298 - 0.187 - 0.079 - 0.368 = -0.336 -> 84.7; G = 0.207 - 0.286 + 0.0945 - 0.542 =
    -0.5265 -> 60.4; B = 0.208 - 0.173 + 0.132 - 0.946 = -0.779 -> 28.2."""
    latent = _latent((1.0, -1.0, 0.5, 2.0))
    rgb = cheap_rgb(latent, SD1)
    assert rgb.shape == (1, 3, 2, 2)
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([-0.336, -0.5265, -0.779]), atol=1e-6)
    assert to_picture(rgb[0], (2, 2)).getpixel((1, 1)) == (85, 60, 28)
    # SDXL's: R = 0.3448 + 0.1953 + 0.0537 - 0.746 = -0.1522 -> 108.1
    xl = cheap_rgb(latent, SDXL)[0, :, 0, 0]
    assert xl[0].item() == pytest.approx(-0.1522, abs=1e-6)
    assert to_picture(cheap_rgb(_latent((9.0, 0, 0, 0)), SD1)[0], (2, 2)).getpixel((0, 0)) == (
        255,
        255,
        255,
    )  # fmt: skip  (clamped)


def test_a_latent_sized_preview_is_scaled_to_the_drawing_s_size():
    picture = to_picture(torch.zeros(3, 12, 8), (64, 96))
    assert picture.size == (64, 96) and picture.getpixel((5, 5)) == (128, 128, 128)


@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    """A tiny random AutoencoderTiny saved as madebyollin/taesd is (save_pretrained)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    small, one = (8, 8, 8, 8), (1, 1, 1, 1)
    tiny = AutoencoderTiny(encoder_block_out_channels=small, decoder_block_out_channels=small,
                           num_encoder_blocks=one, num_decoder_blocks=one)  # fmt: skip
    folder = tmp_path_factory.mktemp("taesd")
    tiny.save_pretrained(folder)
    return folder, tiny.eval()


def test_taesd_on_disk_is_the_preview_and_missing_it_is_said_once(taesd):
    folder, tiny = taesd
    vae = torch.nn.Linear(1, 1)  # the base's VAE: only its device and dtype are read
    vae.device, vae.dtype = torch.device("cpu"), torch.float32
    notes = []
    made = previewer(PreviewSettings(3, "auto", str(folder)), vae, SD1, notes.append)
    assert made.method == "taesd" and notes == []
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = to_picture(tiny.decode(latent[:1]).sample[0], (64, 64))
    assert made(latent, (64, 64)).tobytes() == expected.tobytes()
    gone = previewer(PreviewSettings(3, "taesd", str(folder / "nope")), vae, SD1, notes.append)
    assert gone.method == "cheap" and len(notes) == 1 and "generate.preview.taesd" in notes[0]
    assert previewer(PreviewSettings(3, "auto", None), vae, SD1, notes.append).method == "cheap"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("preview_outputs")


def _engine(tiny_models, outputs, preview: PreviewSettings) -> Engine:
    return Engine(EngineSettings(str(tiny_models["sd"]), outputs_dir=str(outputs), device="cpu",
                                 limits=defaults("generate.limits"), preview=preview))  # fmt: skip


def test_the_engine_previews_every_n_steps_at_the_drawing_s_size(tiny_models, outputs):
    """Every 2 steps of 4, in each of 2 batches: 4 previews of 64x96; the drawing is the same
    as without previews; each batch is handed over, its PNG saved, as it ends."""
    engine = _engine(tiny_models, outputs, PreviewSettings(2, "full", None))
    shown, finished = [], []

    def seen(result):
        finished.append((list(result.seeds), [p.exists() for p in result.paths]))

    req = Request("a girl", **DRAW, batch_count=2)
    result = engine.generate(req, preview=lambda im, d, t: shown.append((im.size, d, t)),
                             finished=seen)  # fmt: skip
    assert shown == [((64, 96), 2, 4), ((64, 96), 4, 4)] * 2
    assert finished == [([7], [True]), ([7, 8], [True, True])]
    plain = _engine(tiny_models, outputs, PreviewSettings(0, "full", None))
    assert plain.previewer is None  # 0: nothing made, nothing computed
    again = plain.generate(req, save=False, preview=lambda *a: shown.append(a))
    assert len(shown) == 4  # no preview at 0
    assert [im.tobytes() for im in again.images] == [im.tobytes() for im in result.images]


def test_a_full_preview_at_the_last_step_is_the_drawing_itself(tiny_models, outputs):
    """The base's own VAE on the last step's latents: the picture that is saved."""
    engine = _engine(tiny_models, outputs, PreviewSettings(4, "full", None))
    shown = []
    result = engine.generate(Request("a girl", **DRAW), save=False,
                             preview=lambda im, d, t: shown.append(im))  # fmt: skip
    assert len(shown) == 1
    diff = torch.tensor(list(shown[0].tobytes())) - torch.tensor(list(result.images[0].tobytes()))
    assert diff.abs().max().item() <= 1  # rounding apart
