"""Model loading by Hugging Face id or local folder, and tiny random-weight models for offline use.

The tiny models are written with `save_pretrained` and loaded back through the same
`from_pretrained` code path as Anything V5 and BLIP-2, so the demo and the tests exercise the
real loading code without a model hub.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kshd.fileio import atomic_dir
from kshd.model_source import ModelSourceError, check_model_source  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

TINY_SD = "sd"
TINY_BLIP2 = "blip2"
TINY_CLIP = "clip"
TINY_DINO = "dino"
# One tiny vision transformer: CLIP's image tower and the DINO stand-in.
TINY_VIT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def device_and_dtype(prefer_half: bool = True) -> tuple[torch.device, torch.dtype]:
    """CUDA in fp16, Apple MPS in fp16, else CPU in fp32 (fp16 on CPU is slow and lossy)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16 if prefer_half else torch.float32
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16 if prefer_half else torch.float32
    return torch.device("cpu"), torch.float32


def load_sd_pipeline(
    pretrained: str, revision: str | None, variant: str | None, device: torch.device,
    dtype: torch.dtype,
):  # fmt: skip
    """A Stable Diffusion 1.x pipeline from safetensors weights, no safety checker, quiet."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        pretrained,
        revision=revision,
        variant=variant,
        dtype=dtype,
        use_safetensors=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    if device.type != "cpu":  # already there; .to() would only warn about dtypes
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_identity(pretrained: str, revision: str | None) -> dict:
    """A hub id and revision, or a local folder's files with sizes and times."""
    folder = Path(pretrained)
    if not folder.is_dir():
        return {"id": pretrained, "revision": revision}
    return {
        "folder": str(folder.resolve()),
        "files": sorted(
            (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        ),
    }


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_clip_tokenizer():
    """A byte-level CLIPTokenizer: every text tokenizes, with no merges to learn."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tok.model_max_length = 77  # without it, padding to max_length breaks
    return tok


def _tiny_text_encoder(vocab_size: int, seed: int):
    """A 5-layer, 32-wide CLIP text model over the byte-level vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-5,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        )
    )


def build_tiny_sd(out_dir: Path, seed: int) -> None:
    """A tiny Stable Diffusion 1.x pipeline (diffusers' dummy components), saved to out_dir."""
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    tokenizer = tiny_clip_tokenizer()
    text_encoder = _tiny_text_encoder(len(tokenizer), seed)
    save_sd_pipeline(out_dir, unet, vae, text_encoder, tokenizer)


def save_sd_pipeline(out_dir: Path, unet, vae, text_encoder, tokenizer) -> None:
    """A diffusers SD 1.x folder from its parts, with SD 1.5's training noise schedule."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)


def build_tiny_blip2(out_dir: Path, seed: int) -> None:
    """A tiny BLIP-2 (ViT + Q-Former + OPT) with a byte-level tokenizer and its processor."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    chars = list(_bytes_to_unicode().values())
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

    tok = tiny_clip_tokenizer()
    n = len(tok)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=n,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=n - 2,
            eos_token_id=n - 1,
            pad_token_id=n - 1,
        ),
        vision_config=TINY_VIT,
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out_dir, safe_serialization=True)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(out_dir)


def build_tiny_dino(out_dir: Path, seed: int) -> None:
    """A tiny ViT with its image processor, standing in for a DINO ViT in tests."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(**TINY_VIT)
    ViTModel(config, add_pooling_layer=False).save_pretrained(out_dir, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out_dir)


def build_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build whichever tiny models are missing under root (atomically); return their folders."""
    root = Path(root)
    builders = {
        TINY_SD: build_tiny_sd,
        TINY_BLIP2: build_tiny_blip2,
        TINY_CLIP: build_tiny_clip,
        TINY_DINO: build_tiny_dino,
    }
    paths = {}
    for name, build in builders.items():
        target = root / name
        if not target.exists():
            log.info("building tiny %s model in %s (seed %d)", name, target, seed)
            with atomic_dir(target) as tmp:
                build(tmp, seed)
        paths[name] = target
    return paths
