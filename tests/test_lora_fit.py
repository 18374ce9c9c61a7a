"""A LoRA made for another base (SD 1.x on SDXL, SDXL on SD 1.x, another text embedding width)
is refused before drawing, in one line naming the key, the LoRA's base and the base in use: in
every drawing command, in the engine (the studio's switch keeps the LoRA in use) and in the
evaluate stage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE
from kshd.adapters.fit import LoraRefused, file_base, read_base
from kshd.config.compose import defaults
from kshd.drawing.engine import Engine, EngineSettings
from kshd.models.family import SD1, SDXL

from .conftest import ROOT
from .helpers.inprocess import kshd_here


@pytest.fixture(scope="module")
def sdxl_lora(tiny_models, tmp_path_factory) -> Path:
    """A LoRA folder for the tiny SDXL (kohya file with `sdxl_base_v1-0`)."""
    from diffusers import UNet2DConditionModel

    from kshd.adapters.files import save_adapter

    from .helpers.lora_files import TINY_INFO, make_adapter, randomize_lora_b

    out = tmp_path_factory.mktemp("sdxl_lora")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sdxl"], subfolder="unet")
    lora = make_adapter(4, 4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    lora.inject(unet)
    randomize_lora_b(unet, seed=1, scale=0.3)
    save_adapter(out, lora, replace(TINY_INFO, sdxl=True), unet)
    return out


def _settings(model: Path, lora, tmp_path) -> EngineSettings:
    limits = defaults("generate.limits")
    return EngineSettings(str(model), lora=str(lora) if lora else None, device="cpu",
                          outputs_dir=str(tmp_path), limits=limits)  # fmt: skip


def test_the_base_is_read_from_metadata_or_tensors(random_lora, sdxl_lora, tmp_path):
    sd = file_base(random_lora / KOHYA_FILE)
    assert (sd.family, sd.width) == (SD1, 32)
    assert "ss_base_model_version sd_v1" in sd.said and "ss_sd_model_name tiny" in sd.said
    assert file_base(sdxl_lora / KOHYA_FILE).family == SDXL
    plain = file_base(random_lora / DIFFUSERS_FILE)  # diffusers' file: no metadata
    assert (plain.family, plain.width) == (None, 32)
    # an A1111 file without metadata: SDXL's second text encoder, SD 1.x's one
    down = torch.zeros(4, 768)
    te2 = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"
    two = read_base({te2: (4, 1280)}, {})
    one = read_base({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
                     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
                     ".lora_down.weight": tuple(down.shape)}, {})  # fmt: skip
    assert two.family == SDXL and (one.family, one.width) == (SD1, 768)
    v2 = read_base({}, {"ss_base_model_version": "sd_v2", "ss_sd_model_name": "sd21"})
    assert v2.family == "sd_v2"


@pytest.mark.parametrize("command", ["generate", "img2img"])
def test_every_command_refuses_a_lora_of_the_other_family_in_one_line(
    command, capsys, tiny_models, random_lora, tmp_path
):
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "navy").save(picture)
    extra = ["--image", str(picture)] if command == "img2img" else []
    run = kshd_here([command, "--prompt", "a girl", "--steps", "1", "--width", "64",
                     "--height", "64", "--out", str(tmp_path / "out"), *extra,
                     f"model.pretrained={tiny_models['sdxl']}", f"generate.lora={random_lora}",
                     "generate.device=cpu"], capsys, cwd=ROOT)  # fmt: skip
    assert run.returncode == 2
    said = [line for line in run.stderr.splitlines() if "generate.lora" in line]
    assert len(said) == 1 and "Traceback" not in run.stderr and "size mismatch" not in run.stderr
    line = said[0]
    assert f"kshd {command}: generate.lora: {random_lora} is a LoRA for SD 1.x" in line
    assert "ss_base_model_version sd_v1" in line and "ss_sd_model_name tiny" in line
    assert f"the base in use, {tiny_models['sdxl']}, is SDXL" in line
    assert not (tmp_path / "out").exists()


def test_the_engine_refuses_by_family_and_by_width_and_keeps_the_lora_in_use(
    tiny_models, random_lora, sdxl_lora, tmp_path
):
    with pytest.raises(LoraRefused, match=r"is a LoRA for SDXL \(ss_base_model_version sdxl"):
        Engine(_settings(tiny_models["sd"], sdxl_lora, tmp_path))
    engine = Engine(_settings(tiny_models["sdxl"], None, tmp_path))
    diffusers_only = random_lora / DIFFUSERS_FILE  # no family recorded: its width says it
    with pytest.raises(LoraRefused, match="text embeddings are 32 wide .* 80 wide"):
        engine.set_lora(str(diffusers_only))
    engine.set_lora(str(sdxl_lora))  # its own family loads
    with pytest.raises(LoraRefused, match="is a LoRA for SD 1.x"):
        engine.set_lora(str(random_lora))
    assert engine.lora_path == str(sdxl_lora)  # the one in use stays


def test_a_lora_that_fails_to_load_is_one_line(capsys, tiny_models, tmp_path):
    """A file that is not safetensors: the loader's own error, its first line, exit code 2."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    run = kshd_here(["generate", "--prompt", "a", "--steps", "1", f"generate.lora={broken}",
                     f"model.pretrained={tiny_models['sd']}", "generate.device=cpu"], capsys,
                    cwd=ROOT)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"kshd generate: generate.lora: {broken}: not a LoRA this model can load (" in run.stderr


def test_the_evaluate_stage_refuses_a_lora_of_another_base(demo_cfg, tiny_models, random_lora):
    from kshd.config.compose import with_values
    from kshd.stages import evaluate

    cfg = with_values(demo_cfg, {"model.pretrained": str(tiny_models["sdxl"]),
                                 "output.lora_dir": str(random_lora)})  # fmt: skip
    with pytest.raises(LoraRefused, match=rf"output.lora_dir: {random_lora} is a LoRA for SD 1"):
        evaluate.run(cfg)
