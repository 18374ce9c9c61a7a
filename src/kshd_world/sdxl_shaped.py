"""An SDXL-shaped pipeline with random weights: SDXL base 1.0's block sizes, built offline.

SDXL's UNet (320/640/1280, 1/2/10 transformer layers a level, cross-attention 2048 = CLIP-L's
768 + OpenCLIP bigG's 1280, text_time conditioning on the pooled 1280 and six size numbers:
2.6 G parameters), its VAE, and both text encoders at their real widths (their depth cut where a
test must be quick). Used by the SDXL-shaped smoke test and `make gpu-check --sdxl`
(bench/gpu_check.py), never by users.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kshd.training.components import Components
from kshd_world.sd15_shaped import SD15_VAE, _text_encoder
from kshd_world.tiny_sdxl import SDXL_SCHEDULE

log = logging.getLogger(__name__)

# stabilityai/stable-diffusion-xl-base-1.0's unet/config.json
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 6 x 256 + the pooled 1280
    sample_size=128,
)
# its VAE: SD's, with SDXL's latent scale (and fp16 overflow, hence force_upcast)
SDXL_VAE = SD15_VAE | dict(sample_size=1024, scaling_factor=0.13025, force_upcast=True)


def _text_encoder_2(tokenizer, layers: int):
    """OpenCLIP ViT-bigG's text tower (1280 wide, 20 heads, its pooled output projected)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=1280, intermediate_size=5120,
            num_hidden_layers=layers, num_attention_heads=20, max_position_embeddings=77,
            hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
            pad_token_id=1,
        )
    )  # fmt: skip


RANDOM_BLOCK = 1 << 24  # numbers drawn once for the UNet's 2.6 G weights (a conv's are 14.7 M)


def random_like_torch_init(model: torch.nn.Module, seed: int) -> None:
    """`model`'s weights as torch's default init draws them (Linear and Conv2d uniform within
    +-1/sqrt(fan_in), norms 1 and 0), cut in turn from one block of random numbers: torch's own
    init of SDXL's 2.6 G weights took 25 s on one thread here, the block's copies 7 s."""
    block = torch.rand(RANDOM_BLOCK, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    at = 0
    with torch.no_grad():
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                bound = module.weight[0].numel() ** -0.5
                for p in params:
                    at = _fill(p.view(-1), block, at, bound)
            elif params:
                raise TypeError(f"no init for {type(module).__name__}'s own parameters")


def _fill(flat: torch.Tensor, block: torch.Tensor, at: int, bound: float) -> int:
    done = 0
    while done < flat.numel():
        take = min(flat.numel() - done, block.numel() - at)
        torch.mul(block[at : at + take], bound, out=flat[done : done + take])
        done, at = done + take, (at + take) % block.numel()
    return at


def sdxl_shaped_components(tokenizer, seed: int = 0, text_layers: int = 2) -> Components:
    """SDXL's parts in memory (random weights from `seed`), ready for `train_lora`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device("meta"):  # no weights drawn here: random_like_torch_init draws them
        unet = UNet2DConditionModel(**SDXL_UNET)
    unet.to_empty(device="cpu")
    random_like_torch_init(unet, seed)
    vae = AutoencoderKL(**SDXL_VAE)
    return Components(
        tokenizer, _text_encoder(tokenizer, text_layers), vae, unet,
        DDPMScheduler(**SDXL_SCHEDULE, clip_sample=False), tokenizer_2=tokenizer,
        text_encoder_2=_text_encoder_2(tokenizer, text_layers), vae_fp32=True,
    )  # fmt: skip


def build_sdxl_shaped(out_dir: Path, tokenizer, seed: int = 0, text_layers: int = 2) -> Path:
    """The same parts as a diffusers folder that `from_pretrained` loads (about 11 GB in fp32)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from kshd_world.clip_bpe import write_clip_bpe_files

    c = sdxl_shaped_components(tokenizer, seed, text_layers)
    pipe = StableDiffusionXLPipeline(
        vae=c.vae, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=c.unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULE),
    )  # fmt: skip
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for folder in ("tokenizer", "tokenizer_2"):
        write_clip_bpe_files(out_dir / folder)
    log.info("SDXL-shaped random-weight pipeline written to %s", out_dir)
    return out_dir
