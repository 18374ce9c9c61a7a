"""The drawing-mode seam: which mode a request is (each mode's rule, asked from the last
registered), and a mode added from this one file, with a field of its own, drawn by the engine
as it is (its pixels, its PNG parameters and PNG Info's reading of them, its outputs folder,
its field's error), and its tab: its GUI part registered here, built, checked and drawn by the
studio as it is."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageOps

from kshd.config.compose import defaults
from kshd.config.schema_generate import Limits
from kshd.drawing import gui_modes
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.gui_modes import TAB_FIELDS, TabPart, picture_inputs, register_tab
from kshd.drawing.modes.img2img import ImageToImage, Picture
from kshd.drawing.modes.registry import mode_of, modes, register_mode, validate
from kshd.drawing.pace import work
from kshd.drawing.pnginfo import parse_parameters, read_parameters, request_fields
from kshd.drawing.request import Request, RequestError

FLIPS = ("horizontal", "vertical")


@dataclass
class MirrorRequest(Request):
    flip: str = "horizontal"  # or "vertical"


@register_mode
class Mirror(ImageToImage):
    """Image to image on the mirrored picture: a mode of its own, with a field of its own."""

    name = "mirror"
    request = MirrorRequest
    param_readers = ImageToImage.param_readers | {"Mirror": ("flip", {f: f for f in FLIPS}.get)}

    @classmethod
    def claims(cls, req: Request) -> bool:
        return isinstance(req, MirrorRequest)

    @classmethod
    def check(cls, req: MirrorRequest, limits: Limits) -> None:
        if req.image is None:
            raise RequestError("image", "a mirror needs the picture to mirror")
        if req.flip not in FLIPS:
            raise RequestError("flip", f"{req.flip!r}; choose one of {', '.join(FLIPS)}")

    @classmethod
    def params(cls, req: MirrorRequest, given=None) -> dict[str, object]:
        return super().params(req, given) | {"Mirror": req.flip}

    def inputs(self, req: MirrorRequest) -> Picture:
        picture = super().inputs(req).picture
        turn = ImageOps.mirror if req.flip == "horizontal" else ImageOps.flip
        return Picture(turn(picture))


def mirror_inputs(tab: str, d: Request, control_types: list[str]):
    """The mirror's tab: image to image's inputs and the way to flip."""
    own, _ = picture_inputs(tab, d, control_types)
    own["flip"] = gr.Radio(list(FLIPS), value="horizontal", label="Flip", elem_id=f"{tab}-flip")
    return own, None


MIRROR_FIELDS = ("image", "strength", "resize_mode", "flip", *TAB_FIELDS)


@pytest.fixture
def mirror_tab(monkeypatch) -> TabPart:
    """The mirror's tab, registered for one test (the studio's other tests build theirs)."""
    monkeypatch.setattr(gui_modes, "_TABS", gui_modes.tab_parts())  # put back afterwards
    return register_tab(TabPart(Mirror, "Mirror", MIRROR_FIELDS, mirror_inputs,
                                stand_ins={"image": "picture"}))  # fmt: skip


DRAW = dict(steps=4, width=64, height=64, sampler="euler", seed=3, positive_prefix="",
            negative_prefix="", batch_size=2, strength=0.6)  # fmt: skip


@pytest.fixture(scope="module")
def engine(tiny_models, random_lora, tmp_path_factory) -> Engine:
    out = tmp_path_factory.mktemp("mode_outputs")
    settings = EngineSettings(str(tiny_models["sd"]), lora=str(random_lora), device="cpu",
                              outputs_dir=str(out), limits=defaults("generate.limits"))  # fmt: skip
    return Engine(settings)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    """A picture that is not its own mirror image: a red left half, noise on the right."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)
    path = tmp_path_factory.mktemp("mirror") / "picture.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def _pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


def test_each_mode_claims_the_requests_its_inputs_make_and_a_new_one_its_own():
    """The built-in rules (a control image: sketch; a mask: inpaint; a picture: image to
    image; else text to image), and a mode registered later asked first."""
    cases = {"txt2img": {}, "img2img": {"image": "p.png"}, "inpaint": {"image": "p.png",
             "mask": "m.png"}, "sketch": {"control_image": "s.png", "image": "p.png"}}  # fmt: skip
    assert {name: mode_of(Request("a", **kw)).name for name, kw in cases.items()} == {
        name: name for name in cases
    }
    assert list(modes()) == ["txt2img", "img2img", "inpaint", "sketch", "mirror"]
    assert mode_of(MirrorRequest("a", image="p.png")) is Mirror
    assert mode_of(MirrorRequest("a")) is Mirror  # and its own check says what it lacks
    limits = defaults("generate.limits")
    with pytest.raises(RequestError, match="^image: a mirror needs the picture"):
        validate(MirrorRequest("a"), limits)
    with pytest.raises(RequestError, match="^mask: inpainting with a ControlNet is not supported"):
        validate(Request("a", control_image="s.png", mask="m.png"), limits)
    with pytest.raises(ValueError, match="'mirror' is registered already"):
        register_mode(Mirror)
    with pytest.raises(TypeError, match="not a Mode subclass"):
        register_mode(MirrorRequest)


def test_a_mode_from_one_file_is_drawn_saved_and_checked_by_the_engine(engine, picture):
    """Mirror draws exactly what image to image draws from the mirrored picture, writes its
    own key after A1111's, saves under outputs/mirror/, and its field is named when bad."""
    mirrored = ImageOps.mirror(Image.open(picture).convert("RGB"))
    done = engine.generate(MirrorRequest("a girl", image=picture, **DRAW))
    plain = engine.generate(Request("a girl", image=mirrored, **DRAW), save=False)
    assert np.array_equal(_pixels(done.images), _pixels(plain.images))
    unmirrored = engine.generate(Request("a girl", image=picture, **DRAW), save=False)
    assert not np.array_equal(_pixels(done.images), _pixels(unmirrored.images))
    params = parse_parameters(read_parameters(done.paths[1]))
    said = (params["Mirror"], params["Denoising strength"], params["Seed"])
    assert said == ("horizontal", "0.6", "4")
    assert done.infotexts[0] == plain.infotexts[0].replace(
        "Denoising strength: 0.6, ", "Denoising strength: 0.6, Mirror: horizontal, "
    )
    assert [p.parent.parent.name for p in done.paths] == ["mirror", "mirror"]
    fields, unused = request_fields(read_parameters(done.paths[1]), "", "")  # PNG Info reads it
    assert (fields["flip"], fields["strength"], fields["seed"], unused) == (
        "horizontal",
        0.6,
        4,
        [],
    )
    text = read_parameters(done.paths[1]).replace("Mirror: horizontal", "Mirror: diagonal")
    fields, unused = request_fields(text, "", "")
    assert "flip" not in fields and unused == ["Mirror"]
    half = MirrorRequest("a", image=picture, strength=0.5)
    assert work(8, 1, 64, 64, Mirror.share(half)) == work(4, 1, 64, 64)  # the queue's estimate
    upright = engine.generate(MirrorRequest("a", image=picture, flip="vertical", **{**DRAW,
                                            "strength": 0.0}), save=False)  # fmt: skip
    flipped = np.asarray(ImageOps.flip(Image.open(picture).convert("RGB")))
    assert np.array_equal(_pixels(upright.images)[0], flipped)  # no step: the picture, flipped
    with pytest.raises(RequestError, match="^flip: 'diagonal'; choose one of horizontal, vertical"):
        engine.generate(MirrorRequest("a", image=picture, flip="diagonal", **DRAW))


def test_a_mode_s_tab_is_its_gui_part_and_the_studio_draws_it(engine, picture, mirror_tab):
    """The studio builds the registered tab with its endpoint (`/mirror`, its fields in order),
    names its own field's mistake beside it, and its handler draws a MirrorRequest."""
    from kshd.drawing.gui import build_ui
    from kshd.drawing.gui_actions import Handlers
    from kshd.drawing.gui_checks import field_messages
    from kshd.drawing.gui_parts import build_tab

    defaults = Request("", **DRAW)
    ui = build_ui(engine, defaults)
    wired = {f.api_name: [c.label for c in f.inputs] for f in ui.fns.values() if f.api_name}
    assert wired["mirror"][:5] == ["Picture", "Denoising strength", "Resize mode", "Flip", "Prompt"]
    assert len(wired["mirror"]) == len(MIRROR_FIELDS)
    with gr.Blocks():
        tab = build_tab("mirror", defaults, engine.limits)
    said = field_messages(tab, defaults, engine.limits)
    assert said.one("flip", "diagonal") == "Flip: 'diagonal'; choose one of horizontal, vertical"
    assert said.one("flip", "vertical") == ""
    req = MirrorRequest("a girl", image=picture, flip="vertical", **{**DRAW, "batch_size": 1})
    draw = Handlers(engine).drawer("mirror")
    gallery, info, files, drawn = draw(*[getattr(req, n) for n in MIRROR_FIELDS],
                                       progress=lambda *a, **k: None)  # fmt: skip
    assert "Mirror: vertical" in info and drawn[0]["flip"] == "vertical"
    assert [p.split("/")[-3] for p in files] == ["mirror"]
    direct = engine.generate(req, save=False).images[0]
    assert np.array_equal(np.asarray(Image.open(files[0]).convert("RGB")), np.asarray(direct))
    with pytest.raises(gr.Error, match="flip: 'diagonal'"):
        draw(*[getattr(req, n) if n != "flip" else "diagonal" for n in MIRROR_FIELDS],
             progress=lambda *a, **k: None)  # fmt: skip
