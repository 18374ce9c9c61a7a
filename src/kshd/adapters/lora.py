"""LoRA adapters (peft) on the UNet and the text encoder, saved for diffusers and for
AUTOMATIC1111/ComfyUI (kohya)."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kshd.fileio import atomic_path

log = logging.getLogger(__name__)

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "ksh_drawing_style.safetensors"


def add_lora(model, rank: int, alpha: float, target_modules: Sequence[str]) -> None:
    """Attach a trainable LoRA adapter; everything else in the model stays frozen.

    The UNet takes diffusers' `add_adapter`; a text encoder takes peft's own
    `inject_adapter_in_model`, because transformers 5's `add_adapter` demands peft >= 0.22
    (unreleased) although peft 0.21 injects, trains and saves CLIP adapters correctly.
    """
    from diffusers import ModelMixin
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(target_modules)
    )
    if isinstance(model, ModelMixin):
        model.add_adapter(config)
    else:
        inject_adapter_in_model(config, model)


def lora_state_dict(module) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft naming (`...lora_A.weight`), detached, fp32, contiguous."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(module)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def adapter_tensors(unet, text_encoder=None, text_encoder_2=None) -> dict[str, torch.Tensor]:
    """Every adapter, keys prefixed `unet.` / `text_encoder.` (/ SDXL's `text_encoder_2.`) as
    diffusers and kohya expect."""
    out = {f"unet.{k}": v for k, v in lora_state_dict(unet).items()} if unet is not None else {}
    for prefix, encoder in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
        if encoder is not None and getattr(encoder, "peft_config", None):
            out |= {f"{prefix}.{k}": v for k, v in lora_state_dict(encoder).items()}
    return out


def diffusers_state(state: dict[str, torch.Tensor], strength: float) -> dict[str, torch.Tensor]:
    """Prefixed peft keys (a checkpoint's lora.safetensors) -> what load_lora_weights takes.

    The keys stay in peft's naming: diffusers' `convert_state_dict_to_diffusers` renames only
    attention layers, and a file mixing its names with peft's (a LoRA on convs or feed-forward
    layers too) loads only the peft-named half. `strength` (alpha / rank) is folded into
    `lora_B`, since load_lora_weights reads no alpha from such a file and would apply alpha = rank.
    """
    return {
        k: v * strength if ".lora_B." in k else v
        for k, v in state.items()
        if k.startswith(("unet.", "text_encoder.", "text_encoder_2."))
    }


def save_diffusers(state: dict[str, torch.Tensor], out_dir: Path, strength: float) -> Path:
    """`pipe.load_lora_weights(out_dir)` loads this (`strength`: alpha / rank)."""
    from safetensors.torch import save_file

    target = out_dir / DIFFUSERS_FILE
    with atomic_path(target) as tmp:
        save_file(diffusers_state(state, strength), str(tmp), metadata={"format": "pt"})
    return target


def save_kohya(
    state: dict[str, torch.Tensor],
    out_dir: Path,
    alpha: float,
    metadata: dict[str, object],
    sdxl: bool = False,
    unet_config: Mapping | None = None,
) -> Path:
    """kohya-format keys with `.alpha` and `ss_*` metadata, for an A1111/ComfyUI Lora folder.
    An SDXL UNet's keys take the original (SGM) block names, `lora_unet_input_blocks_4_1_...`,
    as kohya's sdxl_train_network.py writes them (A1111, ComfyUI and diffusers read them)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save

    if sdxl and unet_config is not None:
        state = sgm_unet_keys(state, unet_config)
    rename = _sdxl_text_encoder_name if sdxl else _sd1_text_encoder_name
    kohya = {rename(k): v for k, v in convert_state_dict_to_kohya(dict(state)).items()}
    for key in [k for k in kohya if k.endswith(".lora_down.weight")]:
        kohya[key.replace(".lora_down.weight", ".alpha")] = torch.tensor(float(alpha))
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    target = out_dir / KOHYA_FILE
    with atomic_path(target) as tmp:
        tmp.write_bytes(canonical_safetensors(save(kohya, metadata=meta)))
    return target


def sgm_unet_keys(state: Mapping[str, torch.Tensor], unet_config: Mapping) -> dict:
    """`unet.<diffusers module>.lora_*` keys renamed to the module's SGM (LDM) name."""
    from kshd.models.ldm_names import ldm_unet_name, unet_prefixes

    prefixes = unet_prefixes(unet_config)
    out = {}
    for key, value in state.items():
        if key.startswith("unet."):
            module, _, lora = key.removeprefix("unet.").partition(".lora_")
            key = f"unet.{ldm_unet_name(module, prefixes)}.lora_{lora}"
        out[key] = value
    return out


def canonical_safetensors(data: bytes) -> bytes:
    """The same file with its header's keys sorted.

    safetensors writes `__metadata__` in hash-map order, which changes from process to process:
    two identical trainings would give files with different bytes (and DVC hashes). The format
    allows any key order; the header stays padded to 8 bytes.
    """
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    if isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + size :]


def _sd1_text_encoder_name(key: str) -> str:
    """SD 1.x kohya files name CLIP keys `lora_te_text_model_...`; diffusers writes SDXL's
    `lora_te1_`, and transformers 5 dropped the `text_model` level from CLIPTextModel."""
    if not key.startswith("lora_te1_"):
        return key
    rest = key[len("lora_te1_") :]
    return "lora_te_" + (rest if rest.startswith("text_model_") else f"text_model_{rest}")


def _sdxl_text_encoder_name(key: str) -> str:
    """SDXL kohya files name the encoders' keys `lora_te1_text_model_...`/`lora_te2_...`."""
    for prefix in ("lora_te1_", "lora_te2_"):
        if key.startswith(prefix) and not key.startswith(f"{prefix}text_model_"):
            return f"{prefix}text_model_{key[len(prefix) :]}"
    return key


@dataclass(frozen=True)
class KohyaInfo:
    """What a trained LoRA records about its training in the kohya file's `ss_*` fields."""

    rank: int
    alpha: float
    base_model: str
    resolution: int
    trigger: str
    steps: int
    epochs: int
    batch_size: int
    learning_rate: float
    num_images: int
    seed: int
    train_text_encoder: bool = False
    num_reg_images: int = 0
    sdxl: bool = False  # an SDXL base: kohya's SDXL names and ss_base_model_version
    base_model_hash: str | None = None  # a single-file base's sha256, by which Civitai finds it


def kohya_metadata(info: KohyaInfo) -> dict[str, object]:
    """The `ss_*` fields A1111's and civitai's LoRA readers show.

    kohya records the learning rate per part; a text-encoder rate of 0 says the file changes the
    UNet alone, so readers do not expect `lora_te_` keys.
    """
    lr = info.learning_rate
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(info.rank),
        "ss_network_alpha": str(info.alpha),
        "ss_base_model_version": "sdxl_base_v1-0" if info.sdxl else "sd_v1",
        "ss_sd_model_name": info.base_model,
        **({"ss_new_sd_model_hash": info.base_model_hash} if info.base_model_hash else {}),
        "ss_resolution": f"({info.resolution}, {info.resolution})",
        "ss_tag_frequency": {"ksh": {info.trigger: info.num_images}},
        "ss_output_name": Path(KOHYA_FILE).stem,
        "ss_steps": str(info.steps),
        "ss_epoch": str(info.epochs),
        "ss_batch_size_per_device": str(info.batch_size),
        "ss_learning_rate": str(lr),
        "ss_unet_lr": str(lr),
        "ss_text_encoder_lr": str(lr if info.train_text_encoder else 0.0),
        "ss_num_train_images": str(info.num_images),
        "ss_num_reg_images": str(info.num_reg_images),
        "ss_seed": str(info.seed),
        "ss_training_comment": f"trigger phrase: {info.trigger}",
        "modelspec.title": "KSH drawing style",
        "modelspec.architecture": (
            "stable-diffusion-xl-v1-base/lora" if info.sdxl else "stable-diffusion-v1/lora"
        ),
    }


def save_lora(
    out_dir: Path, unet, text_encoder, info: KohyaInfo, text_encoder_2=None
) -> tuple[Path, Path]:
    """Both files of a trained LoRA: diffusers' `pytorch_lora_weights.safetensors` and the kohya
    `ksh_drawing_style.safetensors` with its `ss_*` metadata.

    The one save sequence of the project (stage, tests, fixtures), so every LoRA folder holds the
    same two files made the same way. A text encoder (SDXL's second too) counts only if it
    carries an adapter.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = adapter_tensors(unet, text_encoder, text_encoder_2)
    diffusers_file = save_diffusers(state, out_dir, info.alpha / info.rank)
    kohya_file = save_kohya(state, out_dir, info.alpha, kohya_metadata(info), info.sdxl,
                            getattr(unet, "config", None))  # fmt: skip
    log.info("LoRA saved: %s, %s", diffusers_file, kohya_file)
    return diffusers_file, kohya_file
