"""LoHa, LoKr and DoRA behind the adapter seam: each trains through the loop (UNet and text
encoder), its kohya file names its tensors and its network as LyCORIS' own code does for the
same model, LyCORIS' reader draws the file as it was trained, every key maps under ComfyUI's and
A1111's rules, and the app's engine draws the file at a strength: 0 the base exactly, 1 what was
trained, merged or not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from kshd.adapters.files import DIFFUSERS_FILE, KOHYA_FILE, save_adapter
from kshd.adapters.registry import adapter_class, build_adapter, claiming
from kshd.adapters.weights import open_weights
from kshd.config.compose import defaults
from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import lora_hash
from kshd.drawing.request import Request
from kshd.training.checkpoints import complete_checkpoints
from kshd.training.components import load_components
from kshd.training.loop import CheckpointPolicy, train_lora

from .conftest import ROOT
from .helpers.lora_files import tiny_info
from .helpers.ui_keys import unread

pytestmark = pytest.mark.slow

# each kind with its own options on: LoHa's Tucker convs, LoKr's low-rank small factor (at
# rank 2, under half the tiny model's 8 x 8 factors, so that both factors are low-rank)
KINDS = {"dora": {}, "loha": {"use_tucker": True}, "lokr": {"decompose_both": True}}
RANKS = {"dora": 4, "loha": 4, "lokr": 2}
ALGO = {"dora": "lora", "loha": "loha", "lokr": "lokr"}
RANK, ALPHA, CONV_RANK, CONV_ALPHA = 4, 2, 2, 1
DRAW = dict(steps=3, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="")  # fmt: skip
LYCORIS_PRESET = """enable_conv = true
unet_target_module = ["Transformer2DModel", "ResnetBlock2D"]
unet_target_name = []
text_encoder_target_module = ["CLIPAttention", "CLIPSdpaAttention"]
text_encoder_target_name = []
"""


def adapter_node(kind: str) -> dict:
    """conf/train/adapter/<kind>.yaml with the kind's options on and the convs at their own
    rank and alpha."""
    path = ROOT / "conf" / "train" / "adapter" / f"{kind}.yaml"
    node = yaml.safe_load(path.read_text(encoding="utf-8"))
    return node | KINDS[kind] | {"conv_rank": CONV_RANK, "conv_alpha": CONV_ALPHA}


@pytest.fixture(scope="module", params=sorted(KINDS))
def trained(request, tiny_models, sample_split, tmp_path_factory):
    """(kind, trained components, adapter folder, checkpoints, settings): 5 steps on the tiny
    SD, the text encoder too, a checkpoint a step."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    s = defaults("train", resolution=64, batch_size=2, epochs=1, learning_rate=5e-2, seed=3,
                 rank=RANKS[kind], alpha=ALPHA, train_text_encoder=True,
                 adapter=adapter_node(kind))  # fmt: skip
    c = load_components(str(tiny_models["sd"]))
    result = train_lora(c, sample_split, s, ckpt=CheckpointPolicy(root / "ckpt", 1, None, True,
                                                                  kind))  # fmt: skip
    assert result.steps == 5 and all(np.isfinite([h["loss"] for h in result.history]))
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    info = tiny_info(steps=result.steps, train_text_encoder=True)
    save_adapter(root / "lora", adapter, info, c.unet, c.text_encoder)
    return kind, c, root / "lora", root / "ckpt", s


def _keys(path: Path) -> tuple[list[str], dict]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys()), f.metadata()  # noqa: SIM118 (not a dict)


def _modules(keys) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key in keys:
        module, _, suffix = key.partition(".")
        out.setdefault(module, set()).add(suffix)
    return out


def test_the_kohya_file_has_lycoris_names_and_says_its_network_as_kohya_writes_it(trained):
    kind, _, folder, _, _ = trained
    keys, meta = _keys(folder / KOHYA_FILE)
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert (int(meta["ss_network_dim"]), float(meta["ss_network_alpha"])) == (RANKS[kind], ALPHA)
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == ALGO[kind]
    assert (int(args["conv_dim"]), float(args["conv_alpha"])) == (CONV_RANK, CONV_ALPHA)
    assert all(isinstance(v, str) for v in args.values())  # as kohya records --network_args
    modules = _modules(keys)
    assert all("alpha" in s for s in modules.values())
    assert any(m.startswith("lora_te_text_model_encoder_layers_") for m in modules)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    attn = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = load_file(str(folder / KOHYA_FILE))
    if kind == "dora":
        assert args["dora_wd"] == "True" and args["wd_on_output"] == "True"
        assert modules[attn] == {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"}
        assert tensors[f"{attn}.dora_scale"].shape == (64, 1)  # one magnitude per output
        assert tensors[f"{conv}.dora_scale"].shape == (32, 1, 1, 1)
        assert tensors[f"{conv}.lora_down.weight"].shape[0] == CONV_RANK
    elif kind == "loha":
        assert args["use_tucker"] == "True"
        assert modules[conv] == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
                                 "hada_t2", "alpha"}  # fmt: skip
        assert tensors[f"{conv}.hada_t1"].shape == (CONV_RANK, CONV_RANK, 3, 3)
        assert modules[attn] == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}
    else:
        assert (args["factor"], args["decompose_both"]) == ("-1", "True")
        assert {"lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"} <= modules[attn]
    assert not (folder / DIFFUSERS_FILE).exists()  # diffusers has no (faithful) loader for it
    assert open_weights(folder / KOHYA_FILE).adapter.kind == kind


def test_lycoris_own_network_names_and_shapes_the_tensors_the_same(trained, tiny_models, tmp_path):
    """The reference: LyCORIS (lycoris.kohya, as kohya's train_network.py builds it with
    --network_module lycoris.kohya) on the same UNet and text encoder at the same settings. Every
    module of our file is one of LyCORIS' (it adapts more layers by default), with the same
    tensors in the same shapes, alpha included."""
    from diffusers import UNet2DConditionModel
    from lycoris.kohya import create_network
    from transformers import CLIPTextModel

    kind, _, folder, _, _ = trained
    (tmp_path / "preset.toml").write_text(LYCORIS_PRESET, encoding="utf-8")
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    text = _Kohya(CLIPTextModel.from_pretrained(tiny_models["sd"], subfolder="text_encoder"))
    args = json.loads(_keys(folder / KOHYA_FILE)[1]["ss_network_args"])
    preset = str(tmp_path / "preset.toml")
    network = create_network(1.0, RANKS[kind], ALPHA, None, text, unet, preset=preset, **args)
    network.apply_to(text, unet, True, True)
    theirs = {k: v.shape for k, v in network.state_dict().items()}
    ours = {k: v.shape for k, v in load_file(str(folder / KOHYA_FILE)).items()}
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))[:5]
    assert {k: theirs[k] for k in ours} == ours
    assert {m for m in _modules(ours)} & {"lora_unet_down_blocks_0_resnets_0_conv1"}  # convs too


class _Kohya(torch.nn.Module):
    """A CLIP text model under kohya's module names (`text_model.` first), as transformers 4
    named it; transformers 5 dropped that level, and our files keep kohya's names."""

    def __init__(self, model):
        super().__init__()
        self.text_model = model


def _eps(unet, text_states) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), text_states).sample


def _text(text_encoder, tokenizer) -> torch.Tensor:
    ids = tokenizer(["a drawing, drawn by KSH drawing style"], padding="max_length",
                    max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        return text_encoder(ids)[0]


def test_lycoris_reader_and_ours_draw_the_file_as_it_was_trained(trained, tiny_models):
    """The file read back by LyCORIS' own loader (create_network_from_weights) and by the seam
    computes what the trained model computed: the UNet's prediction and the text encoder's
    states."""
    from diffusers import StableDiffusionPipeline

    kind, c, folder, _, _ = trained
    c.unet.eval(), c.text_encoder.eval()
    states = _text(c.text_encoder, c.tokenizer)
    trained_eps = _eps(c.unet, states)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    base_eps = _eps(pipe.unet, states)
    open_weights(folder / KOHYA_FILE).attach(pipe, "ksh")
    assert torch.allclose(_eps(pipe.unet, states), trained_eps, atol=1e-5)
    assert torch.allclose(_text(pipe.text_encoder, pipe.tokenizer), states, atol=1e-5)
    assert (trained_eps - base_eps).abs().max() > 1e-3  # the training changed the model

    lycoris = _lycoris_eps(folder / KOHYA_FILE, tiny_models["sd"], states)
    assert torch.allclose(lycoris, trained_eps, atol=1e-5)
    if kind == "dora":  # why DoRA draws through the seam: diffusers' loader drops dora_scale
        plain = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
        plain.load_lora_weights(str(folder), weight_name=KOHYA_FILE)
        assert (_eps(plain.unet, states) - trained_eps).abs().max() > 1e-3


def _lycoris_eps(path: Path, sd: Path, states) -> torch.Tensor:
    """The UNet's prediction with the file applied by LyCORIS' own loader."""
    from diffusers import UNet2DConditionModel
    from lycoris.kohya import LycorisNetworkKohya, create_network_from_weights
    from lycoris.utils.preset import read_preset

    preset = path.parent / "lycoris-preset.toml"
    preset.write_text(LYCORIS_PRESET, encoding="utf-8")
    LycorisNetworkKohya.apply_preset(read_preset(str(preset)))
    preset.unlink()
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    network, _ = create_network_from_weights(1.0, str(path), None, None, unet, for_inference=True)
    network.apply_to(None, unet, apply_text_encoder=False, apply_unet=True)
    return _eps(unet, states)


def test_a_lokr_of_full_factors_reads_at_scale_one_as_lycoris_reads_it(tiny_models, tmp_path):
    """Where both of LoKr's factors are full matrices (rank 4 on the tiny model's 8 x 8
    factors), readers ignore alpha and apply the product at 1: the file carries alpha / rank in
    `lokr_w1`, and LyCORIS' loader and ours draw what peft computed."""
    from diffusers import StableDiffusionPipeline

    from .helpers.lora_files import make_adapter

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    states = _text(pipe.text_encoder, pipe.tokenizer)
    adapter = make_adapter(RANK, 1, kind="lokr")
    adapter.inject(pipe.unet)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in (p for p in pipe.unet.parameters() if p.requires_grad):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    trained_eps = _eps(pipe.unet, states)
    _, kohya = save_adapter(tmp_path, adapter, tiny_info(), pipe.unet)
    tensors = load_file(str(kohya))
    full = [k.partition(".")[0] for k in tensors if k.endswith(".lokr_w2")]
    assert full and all(float(tensors[f"{m}.alpha"]) == RANK for m in full)
    assert torch.allclose(_lycoris_eps(kohya, tiny_models["sd"], states), trained_eps, atol=1e-5)
    again = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    open_weights(kohya).attach(again, "ksh")
    assert torch.allclose(_eps(again.unet, states), trained_eps, atol=1e-5)


def test_every_key_maps_under_comfyui_and_a1111_rules(trained, tiny_models):
    kind, _, folder, _, _ = trained
    keys, _ = _keys(folder / KOHYA_FILE)
    for app in ("comfyui", "a1111"):
        assert unread(keys, tiny_models["sd"], False, app) == [], app
    # the rules do refuse what they do not know: a module of no layer, a tensor of no type
    wrong = ["lora_unet_down_blocks_9_resnets_0_conv1.alpha", f"{keys[0].partition('.')[0]}.w"]
    assert len(unread(wrong, tiny_models["sd"], False, "comfyui")) == 2


def _pixels(engine: Engine, scale: float) -> np.ndarray:
    out = engine.generate(Request("a girl", lora_scale=scale, **DRAW), save=False)
    return np.asarray(out.images[0], dtype=np.int16)


def test_the_engine_draws_the_file_at_a_strength_and_its_checkpoint_alike(trained, tiny_models,
                                                                          tmp_path):  # fmt: skip
    """Merged at a strength (the app): 0 is the base pixel for pixel, 1 differs, and the last
    checkpoint (its record says its kind) draws what the file draws."""
    kind, _, folder, ckpt, _ = trained
    settings = EngineSettings(str(tiny_models["sd"]), lora=str(folder / KOHYA_FILE),
                              device="cpu", outputs_dir=str(tmp_path),
                              limits=defaults("generate.limits"))  # fmt: skip
    base = _pixels(Engine(EngineSettings(**{**settings.__dict__, "lora": None})), 1.0)
    engine = Engine(settings)
    assert engine._weights.adapter.kind == kind
    drawn = _pixels(engine, 1.0)
    assert np.abs(drawn - base).max() > 0
    assert np.array_equal(_pixels(engine, 0.0), base)
    assert np.array_equal(_pixels(engine, 1.0), drawn)  # merged again, from the kept base
    step, checkpoint = complete_checkpoints(ckpt)[-1]
    assert step == 5
    engine.set_lora(str(checkpoint))
    assert np.abs(_pixels(engine, 1.0) - drawn).max() <= 1
    engine.set_lora(str(folder))  # the folder: its kohya file
    assert np.array_equal(_pixels(engine, 1.0), drawn)
    # PNG Info names the file with A1111's hash of it, and the studio's chooser offers the folder
    info = engine.generate(Request("a girl", **DRAW), save=False).infotexts[0]
    assert f'Lora hashes: "{KOHYA_FILE.removesuffix(".safetensors")}: ' in info
    assert lora_hash(folder / KOHYA_FILE) in info
    catalog = LoraCatalog(str(folder), str(ckpt), str(tmp_path / "no-metrics.json"), ())
    assert (f"{folder.name} (trained)", str(folder)) in catalog.choices()
    engine.set_lora(None)
    assert np.array_equal(_pixels(engine, 1.0), base)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_tensors(
    trained, sample_split, tiny_models, tmp_path
):
    """The checkpoints hold the kind's tensors (and each module's alpha and rank): resumed from
    step 4 of 5, the run ends on the straight run's tensors, bit for bit."""
    import shutil

    kind, c, _, ckpt, s = trained
    shutil.copytree(ckpt, tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "ckpt" / "checkpoint-5")
    again = load_components(str(tiny_models["sd"]))
    policy = CheckpointPolicy(tmp_path / "ckpt", 1, None, True, kind)
    assert train_lora(again, sample_split, s, ckpt=policy).resumed_from == "checkpoint-4"
    adapter = build_adapter(s.adapter, s.rank, s.alpha)
    straight = adapter.tensors(c.unet, c.text_encoder)
    resumed = adapter.tensors(again.unet, again.text_encoder)
    assert straight.keys() == resumed.keys() and any(".rank" in k for k in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_unmerged_at_a_strength_draws_as_merged(trained, tiny_models):
    """The evaluation's way (layers unmerged, diffusers' `scale` through the UNet's and the text
    encoder's peft layers) and the app's (merged at that strength) draw alike."""
    from diffusers import StableDiffusionPipeline

    kind, _, folder, _, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    weights = open_weights(folder / KOHYA_FILE)
    weights.attach(pipe, "ksh")
    kw = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    unmerged = pipe("a girl", generator=torch.Generator().manual_seed(0),
                    cross_attention_kwargs={"scale": 0.5}, **kw).images[0]  # fmt: skip
    _, first = next(weights.adapter.layers(pipe.unet))
    base, full = _merged_at(first, 0.0), _merged_at(first, 1.0)
    for part in (pipe.unet, pipe.text_encoder):
        for _, layer in weights.adapter.layers(part):
            layer.set_scale("ksh", 0.5)
            layer.merge(adapter_names=["ksh"])
    merged = pipe("a girl", generator=torch.Generator().manual_seed(0), **kw).images[0]
    assert np.abs(unmerged - merged).max() < 1e-4
    if kind == "dora":  # a DoRA at a strength as A1111, ComfyUI and LyCORIS apply it
        halfway = base + 0.5 * (full - base)
        assert torch.allclose(first.get_base_layer().weight, halfway, atol=1e-6)


def _merged_at(layer, strength: float) -> torch.Tensor:
    """The layer's weight merged at `strength` (the layer left unmerged)."""
    layer.set_scale("ksh", strength)
    layer.merge(adapter_names=["ksh"])
    weight = layer.get_base_layer().weight.detach().clone()
    layer.unmerge()
    return weight


@pytest.mark.parametrize("scale", [1.0, 0.0])
def test_the_evaluation_draws_the_file_as_the_app_does(trained, tiny_models, tmp_path, scale):
    """The evaluation (unmerged, the strength through diffusers' `scale`) and the app (merged at
    that strength) draw the same picture from the file: up to rounding at 1, and at 0 both the
    base exactly."""
    from kshd.evaluation.evaluate import sample, use_sampler
    from kshd.models.loading import load_sd_pipeline

    from .helpers.settings import sample_settings

    _, _, folder, _, _ = trained
    pipe = load_sd_pipeline(str(tiny_models["sd"]), None, None, torch.device("cpu"), torch.float32)
    use_sampler(pipe, "euler")
    open_weights(folder).attach(pipe)
    s = sample_settings(prompts=("a girl",), negative_prompt="", seeds=(3,),
                        num_inference_steps=3, guidance_scale=7.5, resolution=64,
                        sampler="euler", positive_prefix="", negative_prefix="")  # fmt: skip
    drawn = np.asarray(sample(pipe, ["a girl"], s, scale, "eval")[0][0], dtype=np.int16)
    settings = EngineSettings(str(tiny_models["sd"]), lora=str(folder), device="cpu",
                              outputs_dir=str(tmp_path))  # fmt: skip
    request = Request("a girl", negative_prompt="", cfg_scale=7.5, lora_scale=scale, **DRAW)
    app = np.asarray(Engine(settings).generate(request, save=False).images[0], dtype=np.int16)
    assert np.abs(drawn - app).max() <= (2 if scale else 0)


def test_a_loha_or_lokr_file_with_dora_scale_is_read_as_loha_or_lokr():
    """LyCORIS' LoHa and LoKr trained with `dora_wd` carry `.dora_scale` too: the file's kind is
    told by its own tensors (DoRA reads only `lora_down`/`lora_up` files), not by the scale."""
    module = "lora_unet_down_blocks_0_attentions_0_proj_in"
    for kind, tensors in (("loha", ("hada_w1_a", "hada_w1_b")), ("lokr", ("lokr_w1", "lokr_w2"))):
        keys = [f"{module}.{t}" for t in (*tensors, "alpha", "dora_scale")]
        assert claiming(keys, {}) is adapter_class(kind), kind
    dora = [f"{module}.{t}" for t in ("lora_down.weight", "lora_up.weight", "dora_scale")]
    assert claiming(dora, {}) is adapter_class("dora")
