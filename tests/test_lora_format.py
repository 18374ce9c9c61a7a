"""The kohya LoRA file: the same bytes whichever process writes it (DVC hashes it), and every
key of it one ComfyUI and A1111 load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kshd.adapters.files import save_adapter
from kshd.training.components import load_components

from .helpers.lora_files import make_adapter, tiny_info
from .helpers.ui_keys import unread

WRITE = """
import sys, torch
from pathlib import Path
from kshd.adapters.files import write_kohya
from kshd.adapters.lora import LoraAdapter
from kshd.config.schema_adapters import LoraSettings
state = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight":
         torch.ones(4, 32), "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
         ".lora_B.weight": torch.full((32, 4), 0.5)}
lora = LoraAdapter(LoraSettings("lora", ("to_q",), ("q_proj",)), 4, 4.0)
kohya = lora.kohya_tensors(state, False, None)
meta = {f"ss_key_{i}": f"value {i}" for i in range(30)} | {"ss_network_dim": 4}
sys.stdout.write(str(write_kohya(kohya, meta, Path(sys.argv[1]))))
"""


def test_kohya_file_is_byte_identical_across_processes(tmp_path):
    files = []
    for i in range(3):
        out = tmp_path / str(i)
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", WRITE, str(out)], capture_output=True, text=True, check=True
        )
        files.append(Path(proc.stdout).read_bytes())
    assert files[0] == files[1] == files[2]
    path = tmp_path / "0" / "ksh_drawing_style.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert meta["ss_key_7"] == "value 7" and meta["ss_network_dim"] == "4"
        names = list(f.keys())  # noqa: SIM118 (a safe_open handle is not a dict)
    assert any(k.endswith(".alpha") for k in names)


# kohya's LoCon set: every linear layer of the transformer blocks and the ResNet 3x3 convs
LOCON = ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
LOCON += ["conv1", "conv2"]
ATTENTION = ["to_k", "to_q", "to_v", "to_out.0"]


def _adapted(unet) -> set[str]:
    return {n for n, m in unet.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


def _eps(unet, sd_dir: Path) -> torch.Tensor:
    """The UNet's prediction on a fixed noisy latent and text state."""
    from diffusers import UNet2DConditionModel

    cfg = UNet2DConditionModel.load_config(sd_dir / "unet")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg["in_channels"], 8, 8, generator=g)
    text = torch.randn(1, 7, cfg["cross_attention_dim"], generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), text).sample


@pytest.mark.parametrize(
    ("targets", "rank", "alpha"),
    [
        pytest.param(ATTENTION, 4, 4, id="attention"),
        pytest.param(LOCON, 4, 4, id="locon"),
        pytest.param(ATTENTION, 4, 1, id="attention-alpha-1"),
        pytest.param(LOCON, 4, 1, id="locon-alpha-1"),
    ],
)
def test_both_files_load_every_trained_layer_at_its_strength(
    tiny_models, tmp_path, targets, rank, alpha
):
    """What diffusers' load_lora_weights reads from either file computes what was trained: every
    adapted layer (attention, feed-forward, projections, ResNet convs) at alpha / rank. A diffusers
    file with attention keys in the old naming beside peft-named conv keys once loaded only the
    convs; one without alpha loaded an alpha-1 LoRA at 4x its strength."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE, save_adapter

    from .helpers.lora_files import make_adapter, randomize_lora_b, tiny_info

    sd = tiny_models["sd"]
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    lora = make_adapter(rank, alpha, target_modules=targets)
    lora.inject(unet)
    randomize_lora_b(unet, seed=1, scale=0.3)
    save_adapter(tmp_path, lora, tiny_info(), unet)
    trained = _eps(unet, sd)
    for name in (DIFFUSERS_FILE, KOHYA_FILE):
        pipe = StableDiffusionPipeline.from_pretrained(sd, safety_checker=None)
        pipe.load_lora_weights(str(tmp_path / name))
        assert _adapted(pipe.unet) == _adapted(unet), name
        assert torch.allclose(_eps(pipe.unet, sd), trained, atol=1e-4), name


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("kind", ["lora", "locon"])
def test_lora_and_locon_files_map_fully_under_comfyui_and_a1111_rules(kind, family, tiny_models,
                                                                       tmp_path):  # fmt: skip
    """Every key of a LoRA or LoCon kohya file, UNet and text encoder(s), SD 1.x and SDXL, is
    one ComfyUI's and A1111's key mapping loads (their rules as tests/helpers/ui_keys.py has
    them), as for the LyCORIS kinds: nothing in the file is silently dropped by either app."""
    sdxl = family == "sdxl"
    c = load_components(str(tiny_models[family]))
    adapter = make_adapter(4, 2, kind=kind)
    adapter.inject(c.unet)
    for encoder in filter(None, (c.text_encoder, c.text_encoder_2)):
        adapter.inject(encoder, text_encoder=True)
    info = tiny_info(sdxl=sdxl, train_text_encoder=True)
    _, kohya = save_adapter(tmp_path, adapter, info, c.unet, c.text_encoder, c.text_encoder_2)
    keys = list(load_file(str(kohya)))
    prefixes = {k.split("_")[1] for k in keys}  # unet, te / te1 and te2
    assert prefixes == ({"unet", "te1", "te2"} if sdxl else {"unet", "te"}), prefixes
    if kind == "locon":
        assert any("resnets" in k or "in_layers" in k or "out_layers" in k for k in keys)
    for app in ("comfyui", "a1111"):
        assert unread(keys, tiny_models[family], sdxl, app) == [], (kind, family, app)
