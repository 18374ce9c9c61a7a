"""The X/Y/Z plot (A1111's script) as a library: its axis values typed as A1111 types them, the
cells drawn in A1111's order with each LoRA loaded once, each cell the image drawn alone with its
settings, the grid's labels and parameters, and a stop between cells keeping what is drawn."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from kshd.adapters.files import DIFFUSERS_FILE
from kshd.config.compose import defaults
from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.engine import Engine, EngineSettings
from kshd.drawing.pnginfo import parse_parameters, read_parameters
from kshd.drawing.request import Request
from kshd.drawing.xyz import Axis, Plot, plan, plot_xyz
from kshd.drawing.xyz_axes import KINDS, AxisError, parse_values, split_values
from kshd.drawing.xyz_grid import BLANK, annotate, image_grid, z_grid

from .helpers.lora_files import make_adapter

BASE = dict(steps=2, width=64, height=64, sampler="euler", seed=5, positive_prefix="",
            negative_prefix="", negative_prompt="ugly", cfg_scale=7.0, lora_scale=1.0)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "typed", "values"),
    [  # the examples of A1111's wiki (Features, X/Y/Z plot)
        ("Steps", "1-5", [1, 2, 3, 4, 5]),
        ("Steps", "1-5 (+2)", [1, 3, 5]),
        ("Seed", "10-5 (-3)", [10, 7]),
        ("CFG Scale", "1-3 (+0.5)", [1.0, 1.5, 2.0, 2.5, 3.0]),
        ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
        ("LoRA strength", "0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        ("Seed", "1, 3-4, 8", [1, 3, 4, 8]),
        ("CFG Scale", "7, 4.5", [7.0, 4.5]),
        ("Seed", "-1", [-1]),
    ],
)
def test_axis_values_are_read_as_a1111_reads_them(kind, typed, values):
    assert parse_values(KINDS[kind], typed) == values


def test_text_values_are_one_csv_row():
    """A1111's wiki: a comma inside a value needs quotes with no space before them."""
    assert split_values("darkness, light, green, heat") == ["darkness", "light", "green", "heat"]
    assert split_values('darkness, "light, green", heat') == [
        "darkness", '"light', 'green"', "heat"
    ]  # fmt: skip
    assert split_values('darkness,"light, green",heat') == ["darkness", "light, green", "heat"]


def test_bad_values_are_named_by_their_axis(tmp_path):
    limits, catalog = defaults("generate.limits"), LoraCatalog(None, None, None)
    base = Request("a girl holding an apple", **BASE)

    def refused(x: Axis, y: Axis | None = None) -> str:
        with pytest.raises(AxisError) as exc:
            plan(base, Plot(x, y or Axis()), catalog, limits, None)
        return str(exc.value)

    assert refused(Axis("Steps", "2, many")).startswith("X values: 'many' is not a whole number")
    assert refused(Axis("Seed", "1"), Axis("Sampler", "Euler, Heun++")).startswith(
        "Y values: 'Heun++' is unknown"
    )
    assert "did not find 'a pear'" in refused(Axis("Prompt S/R", "a pear, a plum"))
    assert "'checkpoint 9' is not in the LoRA list" in refused(Axis("LoRA", "checkpoint 9"))
    assert refused(Axis("Steps", "2, 500")).startswith("X/Y/Z values: cell (1, 0, 0): steps: 500")
    assert refused(Axis("Seed", "1"), Axis("Seed", "2")) == "X/Y/Z types: Seed on two axes"
    assert refused(Axis("Size", "1")).startswith("X type: 'Size'; choose one of Nothing, Seed")


def test_prompt_search_and_replace_and_samplers_by_either_name():
    limits, catalog = defaults("generate.limits"), LoraCatalog(None, None, None)
    base = Request("a man holding an apple, 8k clean", **BASE)
    planned = plan(base, Plot(Axis("Prompt S/R", "an apple, a watermelon, a gun"),
                              Axis("Sampler", "Euler a, dpmpp_2m_karras")),
                   catalog, limits, None)  # fmt: skip
    prompts = [(c.request.prompt, c.request.sampler) for c in planned.cells]
    assert prompts == [
        ("a man holding an apple, 8k clean", "euler_a"),
        ("a man holding a watermelon, 8k clean", "euler_a"),
        ("a man holding a gun, 8k clean", "euler_a"),
        ("a man holding an apple, 8k clean", "dpmpp_2m_karras"),
        ("a man holding a watermelon, 8k clean", "dpmpp_2m_karras"),
        ("a man holding a gun, 8k clean", "dpmpp_2m_karras"),
    ]
    assert planned.axes[1].labels == ["Euler a", "DPM++ 2M Karras"]
    assert {c.request.seed for c in planned.cells} == {5}  # the base's seed in every cell


def test_z_grids_stand_side_by_side_under_their_values():
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    plain = [image_grid([red, blue], rows=1), image_grid([blue, red], rows=1)]
    grids = [annotate(g, (64, 64), ["a", "b"], [""]) for g in plain]
    whole = z_grid(grids, ["Steps: 2", "Steps: 3"])
    top = whole.height - grids[0].height
    assert whole.width == 2 * grids[0].width and top > 0
    w, h = grids[0].size
    assert whole.crop((0, top, w, top + h)).tobytes() == grids[0].tobytes()
    band = np.asarray(whole.crop((0, 0, whole.width, top)).convert("L"))
    assert band.min() < 100  # the Z values written above
    assert z_grid(grids, ["", ""]).size == (2 * grids[0].width, grids[0].height)


@pytest.fixture(scope="module")
def engine(tiny_models, random_lora, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("xyz_outputs")
    return Engine(
        EngineSettings(
            str(tiny_models["sd"]),
            lora=str(random_lora),
            device="cpu",
            outputs_dir=str(outputs),
            limits=defaults("generate.limits"),
        )
    )


def _alone(engine: Engine, **changes) -> bytes:
    return engine.generate(Request("a girl", **{**BASE, **changes}), save=False).images[0].tobytes()


def test_a_2x2_grid_cells_equal_images_drawn_alone_and_its_png_says_so(engine):
    plot = Plot(Axis("Seed", "5, 6"), Axis("Steps", "2-3"))
    result = plot_xyz(engine, Request("a girl", **BASE), plot)
    assert result.drawn == 4 and not result.stopped and result.loads == []
    for i, (seed, steps) in enumerate([(5, 2), (6, 2), (5, 3), (6, 3)]):
        assert result.cells[i].tobytes() == _alone(engine, seed=seed, steps=steps), i
        said = parse_parameters(read_parameters(result.cell_paths[i]))
        assert (said["Seed"], said["Steps"]) == (str(seed), str(steps))
        assert result.cell_paths[i].parent.parent.name == "txt2img"  # as the tab saves them
    (path,) = result.grid_paths
    assert path.parent.parent.name == "txt2img-grids"
    grid = Image.open(path).convert("RGB")
    left = 64 * 3 // 4  # the row labels' band: three quarters of a cell
    top = grid.height - 2 * 64
    assert grid.width == left + 2 * 64 and top > 0
    for i in range(4):
        r, c = divmod(i, 2)
        box = (left + 64 * c, top + 64 * r, left + 64 * (c + 1), top + 64 * (r + 1))
        assert grid.crop(box).tobytes() == result.cells[i].tobytes()
    ink = np.asarray(grid.convert("L")) < 100
    for c in range(2):  # "Seed: 5", "Seed: 6" above the columns
        assert ink[:top, left + 64 * c : left + 64 * (c + 1)].any()
    for r in range(2):  # "Steps: 2", "Steps: 3" left of the rows
        assert ink[top + 64 * r : top + 64 * (r + 1), :left].any()
    said = parse_parameters(read_parameters(path))
    assert said["Prompt"] == "a girl <lora:ksh_drawing_style:1>" and (
        said["Seed"],
        said["Steps"],
    ) == ("5", "2")
    assert {k: said[k] for k in said if k[0] in "XYZSF" and " " in k or k == "Script"} == {
        "Script": "X/Y/Z plot", "X Type": "Seed", "X Values": "5, 6", "Fixed X Values": "5, 6",
        "Y Type": "Steps", "Y Values": "2-3",
    }  # fmt: skip
    assert (
        read_parameters(path)
        .splitlines()[-1]
        .endswith(
            'Script: X/Y/Z plot, X Type: Seed, X Values: "5, 6", Fixed X Values: "5, 6", '
            "Y Type: Steps, Y Values: 2-3"
        )
    )


def _checkpoint(root: Path, step: int, lora: Path) -> Path:
    """A training checkpoint holding the random LoRA's weights (its record: strength 1)."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file(load_file(str(lora / DIFFUSERS_FILE)), str(folder / "lora.safetensors"))
    state = {"adapter": make_adapter(4, 4).record()}
    (folder / "state.json").write_text(json.dumps(state), encoding="utf-8")
    return folder


def test_a_lora_axis_loads_each_lora_once_and_puts_the_one_in_use_back(
    engine, random_lora, tmp_path, monkeypatch
):
    """An epoch picked by eye: checkpoints x seeds, each checkpoint loaded once (the LoRA axis
    outermost, as A1111 draws its checkpoint axis), the cells as drawn alone."""
    first, second = (_checkpoint(tmp_path / "checkpoints", s, random_lora) for s in (8, 16))
    catalog = LoraCatalog(str(random_lora), str(tmp_path / "checkpoints"), None)
    loaded, load = [], engine._load_lora
    monkeypatch.setattr(engine, "_load_lora", lambda p, s=None: (loaded.append(p), load(p, s)))
    order = []
    plot = Plot(Axis("Seed", "5, 6"), Axis("LoRA", "checkpoint 8, checkpoint-16, None"))
    result = plot_xyz(engine, Request("a girl", **BASE), plot, catalog,
                      progress=lambda done, n, s, t: order.append(done))  # fmt: skip
    assert loaded == [str(first), str(second), str(random_lora)]  # the last: put back
    assert result.loads == [str(first), str(second), None]
    assert engine.lora_path == str(random_lora)
    with_lora = [_alone(engine, seed=s) for s in (5, 6)]
    assert [c.tobytes() for c in result.cells[:4]] == with_lora * 2  # the same weights
    engine.set_lora(None)
    try:
        assert [c.tobytes() for c in result.cells[4:]] == [_alone(engine, seed=s) for s in (5, 6)]
    finally:
        engine.set_lora(str(random_lora))
    said = parse_parameters(result.infotext)
    assert (said["Y Type"], said["Y Values"]) == ("LoRA", "checkpoint 8, checkpoint-16, None")


def test_a_stop_between_cells_ends_the_grid_keeping_what_is_drawn(engine):
    stop = threading.Event()

    def progress(done: int, total: int, step: int, steps: int) -> None:
        if done == 1:
            stop.set()  # asked while the second cell would start

    plot = Plot(Axis("Seed", "5, 6"), Axis("CFG Scale", "7, 3"))
    result = plot_xyz(engine, Request("a girl", **BASE), plot, progress=progress, stop=stop)
    assert result.stopped and result.drawn == 1
    assert result.cells[0].tobytes() == _alone(engine, seed=5)
    assert result.cells[1:] == [None, None, None] and result.cell_paths[1:] == [None] * 3
    grid = Image.open(result.grid_paths[0]).convert("RGB")
    corner = grid.getpixel((grid.width - 1, grid.height - 1))  # the last cell: blank
    assert corner == BLANK


def test_kshd_xyz_writes_the_grid_and_its_cells(tmp_path, tiny_models, random_lora, capsys):
    from .conftest import ROOT
    from .helpers.inprocess import kshd_here

    out = tmp_path / "out"
    config = [f"model.pretrained={tiny_models['sd']}", f"generate.lora={random_lora}",
              "generate.device=cpu"]  # fmt: skip
    args = ["xyz", "--prompt", "a girl", "--steps", "2", "--width", "64", "--height", "64",
            "--seed", "4", "--x-type", "CFG Scale", "--x-values", "3-7 [2]",
            "--out", str(out)]  # fmt: skip
    run = kshd_here([*args, *config], capsys, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["00000-4.png", "00001-4.png", "00002-4.png"]  # two cells, then the grid
    said = parse_parameters(read_parameters(out / "00002-4.png"))
    assert (said["X Type"], said["X Values"], said["CFG scale"]) == ("CFG Scale", "3-7 [2]", "3")
    assert "the grid (2 of 2 cells)" in run.stderr
    run = kshd_here([*args[:-2], "--y-type", "Sampler", "--y-values", "Heun++", *config], capsys,
                    cwd=ROOT)  # fmt: skip
    assert run.returncode == 2 and "kshd xyz: Y values: 'Heun++' is unknown" in run.stderr
