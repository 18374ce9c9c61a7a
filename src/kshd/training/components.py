"""The parts of an SD 1.x or SDXL model as training holds them: loaded, placed in their dtypes, and
the text and latent inputs of a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from kshd.models.family import is_single_file, read_checkpoint
from kshd.models.single_file import check_single_file, config_source
from kshd.models.single_file import load_pipeline as single_file_pipeline
from kshd.models.single_file import load_unet as single_file_unet
from kshd.prompts.encoding import encode_chunk_ids, encode_chunk_ids_sdxl
from kshd.prompts.sdxl import clip_skip_note

log = logging.getLogger(__name__)


@dataclass
class Components:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object
    # (pretrained, revision, variant, single_file_config): where a released VAE and text
    # encoder are reloaded from
    source: tuple[str, str | None, str | None, str | None] | None = None
    # SDXL's second tokenizer and text encoder (with projection); None for SD 1.x
    tokenizer_2: object = None
    text_encoder_2: torch.nn.Module | None = None
    vae_fp32: bool = False  # model.no_half_vae: the VAE stays fp32 under fp16/bf16
    # model.clip_skip: the text encoder's layer captions are encoded from (SD 1.x; SDXL always
    # takes the penultimate)
    clip_skip: int = 1

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder] + ([self.text_encoder_2] if self.text_encoder_2 else [])

    @property
    def tokenizers(self) -> list:
        return [self.tokenizer] + ([self.tokenizer_2] if self.text_encoder_2 else [])


def load_components(
    pretrained: str,
    revision: str | None = None,
    variant: str | None = None,
    unet: bool = True,
    prediction_type: str | None = None,
    zero_terminal_snr: bool = False,
    no_half_vae: bool = False,
    single_file_config: str | None = None,
    clip_skip: int = 1,
) -> Components:
    """The parts of an SD 1.x or SDXL model (its family read from the model) through
    from_pretrained, as the reference scripts load them (or from_single_file for one
    .safetensors); the noise schedule as the model was trained (`model.prediction_type`,
    `model.zero_terminal_snr`: a single-file base cannot say); captions encoded at `clip_skip`
    (`model.clip_skip`).

    unet=False leaves the UNet to the training loop, which loads it once the caches are filled and
    the VAE and text encoders are released, so they are never in memory together."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    source = (pretrained, revision, variant, single_file_config)
    if is_single_file(pretrained):
        info = check_single_file(pretrained, single_file_config, prediction_type,
                                 zero_terminal_snr)  # fmt: skip
        pipe = _frozen_of_file(pretrained, single_file_config)
        encoders, vae = _encoders(pipe), pipe.vae
        tokenizers = [pipe.tokenizer, getattr(pipe, "tokenizer_2", None)][: len(encoders)]
        sched = (config_source(info.family, single_file_config), {})
    else:
        encoders, vae = load_frozen(*source)
        tokenizers = [
            CLIPTokenizer.from_pretrained(pretrained, subfolder=folder, revision=revision)
            for folder in ("tokenizer", "tokenizer_2")[: len(encoders)]
        ]
        sched = (pretrained, {"revision": revision})
    if note := clip_skip_note(len(encoders) > 1, clip_skip):
        log.warning("%s", note)
    schedule = {"prediction_type": prediction_type} if prediction_type else {}
    if zero_terminal_snr:
        schedule["rescale_betas_zero_snr"] = True
    return Components(
        tokenizer=tokenizers[0],
        text_encoder=encoders[0],
        vae=vae,
        unet=load_unet(*source) if unet else None,
        noise_scheduler=DDPMScheduler.from_pretrained(
            sched[0], subfolder="scheduler", **sched[1], **schedule
        ),
        source=source,
        tokenizer_2=tokenizers[1] if len(tokenizers) > 1 else None,
        text_encoder_2=encoders[1] if len(encoders) > 1 else None,
        vae_fp32=no_half_vae,
        clip_skip=clip_skip,
    )


def load_unet(
    pretrained: str, revision: str | None, variant: str | None, config: str | None = None
):  # fmt: skip
    """The UNet alone (safetensors only: never unpickle a downloaded file)."""
    from diffusers import UNet2DConditionModel

    if is_single_file(pretrained):
        return single_file_unet(pretrained, config, read_checkpoint(pretrained).family)
    return UNet2DConditionModel.from_pretrained(
        pretrained, subfolder="unet", revision=revision, variant=variant, use_safetensors=True
    )


def load_frozen(
    pretrained: str, revision: str | None, variant: str | None, config: str | None = None
) -> tuple:
    """((text encoder[, SDXL's second]), VAE): loaded with the rest, and again for validation
    once released."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from kshd.models.family import SDXL, model_family

    if is_single_file(pretrained):
        pipe = _frozen_of_file(pretrained, config)
        return _encoders(pipe), pipe.vae
    kw = {"revision": revision, "variant": variant, "use_safetensors": True}
    encoders = (CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", **kw),)
    if model_family(pretrained, revision) == SDXL:
        encoders += (
            CLIPTextModelWithProjection.from_pretrained(
                pretrained, subfolder="text_encoder_2", **kw
            ),
        )
    return encoders, AutoencoderKL.from_pretrained(pretrained, subfolder="vae", **kw)


def _frozen_of_file(path: str, config: str | None):
    """A single file's pipeline without its UNet, in fp32 as from_pretrained gives (the files
    are mostly fp16; the training casts the frozen parts to the compute dtype itself)."""
    family = read_checkpoint(path).family
    return single_file_pipeline(path, config, family, torch.float32, unet=None)


def _encoders(pipe) -> tuple:
    return tuple(e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e)


COMPUTE_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen base runs in for `train.mixed_precision`."""
    return COMPUTE_DTYPES[mixed_precision]


def place_for_training(
    modules: list[torch.nn.Module],
    trainable: list[torch.nn.Module],
    device,
    dtype: torch.dtype,
    keep_fp32: tuple[torch.nn.Module, ...] = (),
) -> None:
    """Frozen weights in the compute dtype, trainable (LoRA) weights in fp32, as diffusers'
    train_text_to_image_lora.py does: the whole pipeline shares one dtype, so validation's VAE
    decode sees the UNet's dtype, while small LoRA updates do not vanish in half precision.
    `keep_fp32`: modules that stay fp32 whatever the dtype (SDXL's VAE, `model.no_half_vae`)."""
    from diffusers.training_utils import cast_training_params

    cast = {} if dtype == torch.float32 else {"dtype": dtype}  # the VAE warns on a no-op cast
    for module in modules:
        if next(module.parameters()).device.type != "meta":  # a released module stays so
            module.to(device, **({} if any(module is m for m in keep_fp32) else cast))
    if cast:
        cast_training_params(trainable, dtype=torch.float32)


def encode_caption_ids(c: Components, ids: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Caption ids ({"input_ids"[, "input_ids_2"]}, [batch, chunks, 77]) -> the UNet's text
    conditioning: `encoder_hidden_states` (at `c.clip_skip`), and SDXL's pooled `text_embeds`."""
    if c.text_encoder_2 is None:
        hidden = encode_chunk_ids(c.text_encoder, ids["input_ids"], c.clip_skip)
        return {"encoder_hidden_states": hidden}
    hidden, pooled = encode_chunk_ids_sdxl(
        c.text_encoder, c.text_encoder_2, ids["input_ids"], ids["input_ids_2"]
    )
    return {"encoder_hidden_states": hidden, "text_embeds": pooled}


def batch_inputs(
    c: Components, batch: dict, device, dtype
) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """(latents, encoder hidden states, SDXL's added conditions or None): sampled from the cached
    distribution or encoded live.

    Both paths draw the latent sample from the global RNG exactly as AutoencoderKL's
    `latent_dist.sample()` does, so cached and live training see the same noise.
    """
    if "latent_mean" in batch:
        from diffusers.utils.torch_utils import randn_tensor

        mean = batch["latent_mean"].to(device, dtype)
        std = torch.exp(0.5 * batch["latent_logvar"].to(device, dtype))
        latents = mean + std * randn_tensor(mean.shape, device=device, dtype=dtype)
    else:
        with torch.no_grad():  # in the VAE's own dtype (fp32 with model.no_half_vae)
            pixels = batch["pixel_values"].to(device, c.vae.dtype)
            latents = c.vae.encode(pixels).latent_dist.sample().to(dtype)
    # Contiguous: the VAE returns channels-last strides, and randn_like (the noise) follows
    # strides, so without this the same RNG draws would land in other places per path.
    latents = (latents * c.vae.config.scaling_factor).contiguous()
    if "encoder_hidden_states" in batch:
        text = batch
    else:
        ids = {k: batch[k].to(device) for k in ("input_ids", "input_ids_2") if k in batch}
        with torch.set_grad_enabled(c.text_encoder.training):  # text-encoder LoRA: gradients
            text = encode_caption_ids(c, ids)
    hidden = text["encoder_hidden_states"].to(device, dtype)
    if "time_ids" not in batch:
        return latents, hidden, None
    added = {
        "text_embeds": text["text_embeds"].to(device, dtype),
        "time_ids": batch["time_ids"].to(device, dtype),
    }
    return latents, hidden, added
