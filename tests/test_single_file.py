"""Single-file checkpoints as `model.pretrained`: the tiny SD and SDXL written as one
.safetensors in the original (LDM / SGM) layout, as Civitai's and Illustrious-XL v2.0's files
are, read back through diffusers' `from_single_file` in training, drawing and the app; their
prediction markers checked against config; pickles and wrong files refused with one line."""

from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.gui_actions import single_file_settings
from kshd.drawing.request import Request
from kshd.models.family import SD1, SDXL, model_family
from kshd.models.identity import model_identity
from kshd.models.ldm_names import ldm_unet_name, unet_prefixes
from kshd.models.loading import load_sd_pipeline
from kshd.models.source import ModelSourceError
from kshd.training.components import load_components
from kshd_world.single_file import write_single_file

from .conftest import QUICK_EVAL

CPU = torch.device("cpu")
# the UNet block layouts of SD 1.5 and SDXL base (their unet/config.json)
SD15 = dict(layers_per_block=2, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)  # fmt: skip
SDXL_BASE = dict(layers_per_block=2,
                 down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                 up_block_types=["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"])  # fmt: skip


@pytest.mark.parametrize(
    ("config", "diffusers", "ldm"),
    [
        (SD15, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
         "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
        (SD15, "down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        (SD15, "down_blocks.3.resnets.1.conv2", "input_blocks.11.0.out_layers.3"),
        (SD15, "mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
        (SD15, "up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
        (SD15, "up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
        (SD15, "up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out"),
        (SDXL_BASE, "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
         "input_blocks.8.1.transformer_blocks.9.ff.net.2"),
        (SDXL_BASE, "down_blocks.1.downsamplers.0.conv", "input_blocks.6.0.op"),
        (SDXL_BASE, "up_blocks.0.attentions.2.norm", "output_blocks.2.1.norm"),
        (SDXL_BASE, "up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
        (SDXL_BASE, "up_blocks.2.resnets.0.conv_shortcut", "output_blocks.6.0.skip_connection"),
        (SDXL_BASE, "add_embedding.linear_2", "label_emb.0.2"),
    ],
)  # fmt: skip
def test_diffusers_names_map_to_the_names_of_sd_and_sdxl_checkpoints(config, diffusers, ldm):
    """The names A1111, ComfyUI and kohya's SDXL LoRAs use, block for block."""
    assert ldm_unet_name(diffusers, unet_prefixes(config)) == ldm


def _parts(pipe) -> dict[str, dict[str, torch.Tensor]]:
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return {n: getattr(pipe, n).state_dict() for n in names if getattr(pipe, n, None) is not None}


def _draw(pipe) -> np.ndarray:
    return pipe(
        "an anime girl", num_inference_steps=2, height=64, width=64, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images[0]  # fmt: skip


@pytest.mark.parametrize(("name", "family"), [("sd", SD1), ("sdxl", SDXL)])
def test_a_single_file_loads_the_same_model_as_its_folder(tiny_models, name, family):
    """Every weight of the file equals the folder's (diffusers' reader undoes the layout the
    builder wrote), and both draw the same."""
    file, folder = str(tiny_models[f"{name}-file"]), str(tiny_models[name])
    with safe_open(file, "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert model_family(file) == model_family(folder) == family
    single = load_sd_pipeline(file, None, None, CPU, torch.float32, single_file_config=folder)
    base = load_sd_pipeline(folder, None, None, CPU, torch.float32)
    a, b = _parts(single), _parts(base)
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys(), part
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert np.abs(_draw(single) - _draw(base)).max() < 1e-4


def test_training_loads_a_half_precision_file_as_the_folder_in_fp32(tiny_models, tmp_path):
    """Checkpoints are mostly fp16: the trainer still gets fp32 parts (it casts the frozen ones
    itself), the UNet loaded later from the same file, the scheduler from the configs."""
    folder = tiny_models["sdxl"]
    half = {k: v.half() for k, v in load_file(tiny_models["sdxl-file"]).items()}
    save_file(half, tmp_path / "half.safetensors")
    c = load_components(str(tmp_path / "half.safetensors"), single_file_config=str(folder))
    ref = load_components(str(folder))
    for got, want in zip(c.text_encoders + [c.vae, c.unet], ref.text_encoders + [ref.vae, ref.unet],
                         strict=True):  # fmt: skip
        assert {p.dtype for p in got.parameters()} == {torch.float32}
        w = want.state_dict()
        assert all(torch.equal(v, w[k].half().float()) for k, v in got.state_dict().items())
    assert c.noise_scheduler.config == ref.noise_scheduler.config
    assert c.source == (str(tmp_path / "half.safetensors"), None, None, str(folder))


def _marked(tiny_models, tmp_path, markers=(), metadata=None) -> str:
    out = tmp_path / f"marked-{len(markers)}-{bool(metadata)}.safetensors"
    return str(write_single_file(tiny_models["sdxl"], out, markers, metadata))


def test_a_vpred_file_must_be_drawn_and_trained_as_v_prediction(tiny_models, tmp_path):
    """NoobAI-XL V-Pred's file carries `v_pred` and `ztsnr` (ComfyUI reads them); diffusers
    would read it as epsilon and draw noise: config must agree, or one line says what to set."""
    folder = str(tiny_models["sdxl"])
    file = _marked(tiny_models, tmp_path, ("v_pred", "ztsnr"))
    load = lambda *a: load_sd_pipeline(file, None, None, CPU, torch.float32, *a, folder)  # noqa: E731
    with pytest.raises(
        ModelSourceError,
        match=r"model\.prediction_type.*v-prediction.*"
        r"model\.prediction_type=v_prediction and model\.zero_terminal_snr=true",
    ):
        load(None, False)  # fmt: skip
    with pytest.raises(ModelSourceError, match=r"model\.zero_terminal_snr.*ztsnr"):
        load_components(file, prediction_type="v_prediction", single_file_config=folder)
    pipe = load("v_prediction", True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr
    kohya = _marked(tiny_models, tmp_path, metadata={"modelspec.prediction_type": "v"})
    with pytest.raises(ModelSourceError, match="v-prediction checkpoint"):
        load_components(kohya, single_file_config=folder)
    # the app has no config to set: a marked file chosen there draws as its markers say
    chosen = single_file_settings(EngineSettings(file, single_file_config=folder))
    assert (chosen.prediction_type, chosen.zero_terminal_snr) == ("v_prediction", True)
    assert (
        single_file_settings(
            EngineSettings(file, single_file_config=str(tiny_models["sd"]))
        ).single_file_config
        is None
    )  # another family's configs: not used


def test_files_that_are_no_usable_base_are_refused_with_one_line(
    tiny_models, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    sd = str(tiny_models["sd"])
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not read")
    lora = tmp_path / "lora.safetensors"
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1)}, lora
    )
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    cases = [
        (str(pickle), sd, r"safetensors only .*pickle"),
        (str(tmp_path / "missing.safetensors"), sd, "no such file"),
        (str(lora), sd, "is a LoRA"),
        (str(garbage), sd, "cannot be read as safetensors"),
        (str(tiny_models["sdxl-file"]), sd, r"single_file_config.* is sd1, but .* is sdxl"),
    ]
    for file, config, message in cases:
        with pytest.raises(ModelSourceError, match=message) as err:
            load_components(file, single_file_config=config)
        assert "\n" not in str(err.value) and "model." in str(err.value)
    # no configs named, none cached, no network: the key and the ways out, before any loading
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelSourceError, match=r"single_file_config.*stable-diffusion-xl-base"):
        load_sd_pipeline(str(tiny_models["sdxl-file"]), None, None, CPU, torch.float32)


def test_a_single_file_identity_follows_its_content(tiny_models, tmp_path):
    """Resume and cache keys: a copied file keeps its identity, another fine-tune of the same
    shape (every weight different; the digest samples the file as it does a folder's) not."""
    copy = tmp_path / "copy.safetensors"
    shutil.copy(tiny_models["sd-file"], copy)
    original = model_identity(str(tiny_models["sd-file"]), None)
    assert model_identity(str(copy), None) == original and original["files"] == 1
    state = load_file(copy)
    save_file({k: v * 1.01 for k, v in state.items()}, copy)
    assert model_identity(str(copy), None) != original


def test_the_app_draws_a_single_file_and_writes_a1111s_model_hash(tiny_models, tmp_path):
    """PNG parameters name the file's stem and its sha256's first 10 digits, A1111's hash, by
    which Civitai finds the base; the picture equals the folder's."""
    file = tiny_models["sd-file"]
    common = dict(device="cpu", outputs_dir=str(tmp_path / "out"))
    single = Engine(EngineSettings(str(file), single_file_config=str(tiny_models["sd"]), **common))
    folder = Engine(EngineSettings(str(tiny_models["sd"]), **common))
    req = Request(
        "an anime girl",
        steps=3,
        width=64,
        height=64,
        seed=7,
        sampler="euler",
        positive_prefix="",
        negative_prefix="",
    )
    a, b = single.generate(req), folder.generate(req)
    assert np.abs(np.asarray(a.images[0], float) - np.asarray(b.images[0], float)).max() <= 1
    text = Image.open(a.paths[0]).text["parameters"]
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert re.search(rf"Model hash: {sha[:10]}, Model: sd\b", text), text


@pytest.mark.slow
def test_the_stages_train_and_evaluate_on_a_single_file_base(tiny_models, ready_project, tmp_path):
    """The train and evaluate stages as DVC runs them with `model.pretrained` naming a file:
    the LoRA records the file's name and sha256 as kohya does; evaluation draws with it."""
    import json

    from .helpers.inprocess import run_stage_here

    file = tiny_models["sd-file"]
    root = tmp_path / "project"
    args = [f"model.pretrained={file}", f"model.single_file_config={tiny_models['sd']}"]
    ready_project(root, [*args, *QUICK_EVAL])  # the stages' mechanics, not the metrics
    run_stage_here(root, "train")
    run_stage_here(root, "evaluate")
    train = json.loads((root / "reports/train/metrics.json").read_text(encoding="utf-8"))
    assert train["steps"] > 0 and np.isfinite(train["final_loss"])
    with safe_open(root / "models/lora/ksh_drawing_style.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["ss_sd_model_name"] == "sd.safetensors"
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(file.read_bytes()).hexdigest()
    metrics = json.loads((root / "reports/metrics.json").read_text(encoding="utf-8"))
    assert metrics["model_family"] == "sd1" and isinstance(metrics["style_gain"], float)


SDXL_CONFIGS = "stabilityai/stable-diffusion-xl-base-1.0"  # diffusers' choice for config: null


def _hub_cache(cache, folder, files) -> None:
    """The Hub cache as huggingface_hub lays it out, holding `files` of `folder` as the
    snapshot of SDXL base's repo (the configs diffusers reads for a single file)."""
    repo = cache / ("models--" + SDXL_CONFIGS.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    for name in files:
        (repo / "snapshots" / ("a" * 40) / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, repo / "snapshots" / ("a" * 40) / name)


def test_a_single_file_with_configs_partly_cached_is_one_line_offline_and_fetched_online(
    tiny_models, tmp_path, monkeypatch
):
    """`model.single_file_config: null` and a cache holding only model_index.json of the config
    repo (what the family check fetched): offline that is one line naming the key and the way
    out, online diffusers is let fetch the rest, and a whole cache loads with no network."""
    import diffusers.loaders.single_file as single_file_loader
    from huggingface_hub import constants

    folder, file = tiny_models["sdxl"], str(tiny_models["sdxl-file"])
    configs = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".json", ".txt")
    )
    cache = tmp_path / "hub"
    _hub_cache(cache, folder, ["model_index.json"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match=r"model\.single_file_config.*scheduler") as err:
        load_sd_pipeline(file, None, None, CPU, torch.float32)
    assert "\n" not in str(err.value) and "network access once" in str(err.value)
    # online: the loader is not told to stay local, so the Hub fills in the missing configs
    asked, real = [], single_file_loader.snapshot_download

    def hub(repo_id, local_files_only=None, **kw):
        asked.append(local_files_only)
        if not local_files_only:
            _hub_cache(tmp_path / "fetched", folder, configs)
            shutil.copytree(tmp_path / "fetched", cache, dirs_exist_ok=True)
        return real(repo_id, local_files_only=True, **kw)

    monkeypatch.setattr(single_file_loader, "snapshot_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    pipe = load_sd_pipeline(file, None, None, CPU, torch.float32)
    assert asked == [False] and pipe.scheduler is not None
    # now the cache is whole: offline again, it loads without asking the Hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    load_sd_pipeline(file, None, None, CPU, torch.float32)
    assert asked == [False, True]
