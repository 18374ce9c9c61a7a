"""Live previews while drawing, as A1111's "Live previews": every `generate.preview.every` steps
the latents of the batch in progress are turned into a picture the studio shows.

Three ways, as A1111 offers them: `cheap` (its "Approx cheap": a fixed latent-to-RGB map per
pixel, free), `taesd` (madebyollin's tiny autoencoder, diffusers' AutoencoderTiny, from a folder
on disk: near the real colours and shapes for a few milliseconds) and `full` (the base's own VAE,
as the final picture is decoded: exact, a VAE decode each time). `auto`: TAESD where its folder
is on disk, else cheap. A base whose VAE has a latent space of its own (the demo world's) needs
`full`: the SD coefficients would show noise (the demo profile sets it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from kshd.config.schema_generate import PreviewSettings
from kshd.models.family import SDXL

log = logging.getLogger(__name__)
Preview = Callable[[Image.Image, int, int], None]  # (picture, steps done, steps in all)

# A1111's modules/sd_vae_approx.py `cheap_approximation`: RGB (-1..1) from the 4 latent channels
# of a latent as the UNet sees it (scaled by the VAE's scaling factor), one row per channel
CHEAP_SD1 = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173),
             (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))  # fmt: skip
CHEAP_SDXL = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250),
              (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))  # fmt: skip


def cheap_rgb(latents: torch.Tensor, family: str) -> torch.Tensor:
    """A1111's Approx cheap: `(..., 4, h, w)` latents to `(..., 3, h, w)` RGB in -1..1 (not
    clamped), at the latents' size."""
    coefs = torch.tensor(CHEAP_SDXL if family == SDXL else CHEAP_SD1)
    return torch.einsum("...lxy,lr->...rxy", latents.float(), coefs.to(latents.device))


def to_picture(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """One `(3, h, w)` RGB in -1..1 as A1111 shows it (x 0.5 + 0.5, clamped), at `size` (width,
    height): a latent-sized one is scaled up to the drawing's size."""
    pixels = ((rgb.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1) * 255).round().byte()
    picture = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    return picture if picture.size == size else picture.resize(size, Image.Resampling.BILINEAR)


class Previewer:
    """Latents to a picture by one of the methods; `every` steps between two previews."""

    def __init__(self, every: int, method: str, decode: Callable[[torch.Tensor], torch.Tensor]):
        self.every, self.method, self._decode = every, method, decode

    def due(self, done: int) -> bool:
        """Whether step `done` (1-based, of the batch) gets a preview."""
        return done % self.every == 0

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        """The first picture of the batch in progress, at the drawing's `size`."""
        return to_picture(self._decode(latents[:1])[0], size)


def _taesd(folder: str, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    # the pipeline's latents are already scaled as TAESD reads them (its scaling factor is 1)
    return lambda latents: tiny.decode(latents.to(device, dtype)).sample


def _full(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    def decode(latents: torch.Tensor) -> torch.Tensor:
        scaled = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
        return vae.decode(scaled).sample

    return decode


def previewer(
    settings: PreviewSettings, vae, family: str, note: Callable[[str], None]
) -> Previewer | None:
    """The previewer `settings` ask for (None when `every` is 0: no preview, no cost), the
    base's `vae` and `family` for full and cheap. A TAESD folder that is not on disk is said
    once (`note`) and the preview is cheap."""
    if settings.every == 0:
        return None
    method = settings.method
    on_disk = bool(settings.taesd) and Path(settings.taesd).is_dir()
    if method == "auto":
        method = "taesd" if on_disk else "cheap"
    if method == "taesd" and not on_disk:
        note(f"no TAESD at {settings.taesd} (generate.preview.taesd): previews are cheap ones; "
             "download madebyollin/taesd (taesdxl for SDXL) into that folder")  # fmt: skip
        method = "cheap"
    if method == "taesd":
        decode = _taesd(str(settings.taesd), vae.device, vae.dtype)
    elif method == "full":
        decode = _full(vae)
    else:
        decode = lambda latents: cheap_rgb(latents, family)  # noqa: E731
    log.info("live preview every %d steps: %s", settings.every, method)
    return Previewer(settings.every, method, decode)
