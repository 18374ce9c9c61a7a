"""Tiny random-weight models for offline use: SD 1.x, BLIP-2, CLIP and a DINO stand-in.

Built deterministically from a seed and written with `save_pretrained`, they are loaded back
through the same `from_pretrained` code as Anything V5 and BLIP-2 (`kshd.models`), so the demo
and the tests exercise the real loading code without a model hub. Users never need them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from kshd.fileio import atomic_dir
from kshd_world.sd_folder import save_sd_pipeline
from kshd_world.tiny_parts import TINY_CLIP_TEXT, TINY_SD_RESOLUTION, TINY_VIT, tiny_vae
from kshd_world.tiny_sdxl import build_tiny_sdxl

log = logging.getLogger(__name__)

TINY_SD = "sd"


TINY_BLIP2 = "blip2"


TINY_CLIP = "clip"


TINY_DINO = "dino"


TINY_CONTROLNET = "controlnet"


TINY_INPAINT = "sd-inpaint"


TINY_SDXL = "sdxl"


TINY_SDXL_CONTROLNET = "sdxl-controlnet"  # the tiny SDXL's ControlNet (its UNet's encoder)


TINY_SINGLE_FILES = "single-file"  # the tiny SD and SDXL each as one .safetensors (LDM names)


# Bump when a tiny builder changes what it writes: folders built by another version are rebuilt.
TINY_BUILDER_VERSION = 3


TINY_MANIFEST = "kshd-tiny.json"


def _tiny_text_encoder(vocab_size: int, seed: int):
    """A 5-layer, 32-wide CLIP text model; special-token ids as openai/clip-vit-large-patch14's."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(**TINY_CLIP_TEXT, num_hidden_layers=5, vocab_size=vocab_size)
    )


def build_tiny_sd(out_dir: Path, seed: int, in_channels: int = 4) -> None:
    """A tiny Stable Diffusion 1.x pipeline with CLIP's real tokenizer, saved to out_dir (with
    `in_channels=9`, an inpainting model's UNet: latents, mask and masked picture)."""
    from diffusers import UNet2DConditionModel

    from kshd_world.clip_bpe import clip_bpe_tokenizer, write_clip_bpe_files

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SD_RESOLUTION // 8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    vae = tiny_vae()
    tokenizer = clip_bpe_tokenizer()
    text_encoder = _tiny_text_encoder(len(tokenizer), seed)
    save_sd_pipeline(out_dir, unet, vae, text_encoder, tokenizer)
    write_clip_bpe_files(out_dir / "tokenizer")  # the files SD 1.x's tokenizer folder holds


def build_controlnet_for(sd_dir: Path, out_dir: Path, seed: int) -> None:
    """A ControlNet for the SD folder's UNet (`ControlNetModel.from_unet`: its encoder copied),
    with random instead of zero output convolutions, so that it changes what is drawn as a
    trained one does; saved with `save_pretrained` (safetensors)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet", use_safetensors=True)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    generator = torch.Generator().manual_seed(seed)
    zero = [net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks,
            net.controlnet_mid_block]  # fmt: skip
    with torch.no_grad():
        for conv in zero:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.05)
    net.save_pretrained(out_dir, safe_serialization=True)


def _build_tiny_sdxl(out_dir: Path, seed: int) -> None:

    build_tiny_sdxl(out_dir, seed)


def build_tiny_sdxl_controlnet(out_dir: Path, seed: int) -> None:
    """The tiny SDXL's ControlNet (from_unet keeps its text_time conditioning)."""
    build_controlnet_for(out_dir.parent / TINY_SDXL, out_dir, seed)


def build_tiny_single_files(out_dir: Path, seed: int) -> None:
    """The tiny SD and SDXL (built alongside) as the single files users download."""
    from kshd_world.single_file import write_single_file

    for name in (TINY_SD, TINY_SDXL):
        write_single_file(out_dir.parent / name, out_dir / f"{name}.safetensors")


def build_tiny_inpaint(out_dir: Path, seed: int) -> None:
    """A tiny 9-channel inpainting SD (SD 1.5 inpainting's shape), saved like the tiny SD."""
    build_tiny_sd(out_dir, seed, in_channels=9)


def build_tiny_controlnet(out_dir: Path, seed: int) -> None:
    """The tiny SD's ControlNet (its SD folder built alongside, from the same seed)."""
    sd = out_dir.parent / TINY_SD
    build_controlnet_for(sd, out_dir, seed)


def build_tiny_blip2(out_dir: Path, seed: int) -> None:
    """A tiny BLIP-2 (ViT + Q-Former + OPT) with a byte-level tokenizer and its processor."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    from kshd_world.clip_bpe import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *chars])}
    tok = GPT2Tokenizer(
        vocab=vocab,
        merges=[],
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
    num_query_tokens = 4
    image_proc = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = Blip2Processor(image_proc, tok, num_query_tokens=num_query_tokens)
    config = Blip2Config(
        vision_config=TINY_VIT,
        qformer_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            encoder_hidden_size=32,
            vocab_size=len(tok),
        ),
        text_config=dict(
            model_type="opt",
            hidden_size=32,
            ffn_dim=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tok),
            word_embed_proj_dim=32,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        num_query_tokens=num_query_tokens,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def build_tiny_clip(out_dir: Path, seed: int) -> None:
    """A tiny CLIP (text + vision towers) with its processor, for the evaluation metrics."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from kshd_world.clip_bpe import clip_bpe_tokenizer, write_clip_bpe_files

    tok = clip_bpe_tokenizer()
    config = CLIPConfig(
        text_config=dict(**TINY_CLIP_TEXT, num_hidden_layers=2, vocab_size=len(tok)),
        vision_config=TINY_VIT,
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out_dir, safe_serialization=True)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(out_dir)
    write_clip_bpe_files(out_dir)


def build_tiny_dino(out_dir: Path, seed: int) -> None:
    """A tiny ViT with its image processor, standing in for a DINO ViT in tests."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(**TINY_VIT)
    ViTModel(config, add_pooling_layer=False).save_pretrained(out_dir, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out_dir)


def _tiny_manifest(name: str, seed: int) -> dict:
    """What a tiny folder was built from: a folder with another manifest is out of date."""
    return {"model": name, "seed": seed, "builder_version": TINY_BUILDER_VERSION}


def _is_current(target: Path, manifest: dict) -> bool:
    try:
        return json.loads((target / TINY_MANIFEST).read_text(encoding="utf-8")) == manifest
    except (OSError, ValueError):
        return False


def build_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build the tiny models that are missing or out of date under root (atomically)."""
    root = Path(root)
    builders = {
        TINY_SD: build_tiny_sd,
        TINY_BLIP2: build_tiny_blip2,
        TINY_CLIP: build_tiny_clip,
        TINY_DINO: build_tiny_dino,
        TINY_CONTROLNET: build_tiny_controlnet,  # after the SD whose UNet it copies
        TINY_INPAINT: build_tiny_inpaint,
        TINY_SDXL: _build_tiny_sdxl,
        TINY_SDXL_CONTROLNET: build_tiny_sdxl_controlnet,
        TINY_SINGLE_FILES: build_tiny_single_files,  # after the folders it converts
    }
    paths = {}
    for name, build in builders.items():
        target, manifest = root / name, _tiny_manifest(name, seed)
        if not _is_current(target, manifest):
            log.info("building tiny %s model in %s (seed %d)", name, target, seed)
            with atomic_dir(target) as tmp:
                build(tmp, seed)
                (tmp / TINY_MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
        paths[name] = target
    for name in (TINY_SD, TINY_SDXL):
        paths[f"{name}-file"] = root / TINY_SINGLE_FILES / f"{name}.safetensors"
    return paths
