"""The report page: charts label their range, the best checkpoint is marked, text is escaped."""

from __future__ import annotations

from PIL import Image

from kshd.evaluation.evaluate import HEADLINE
from kshd.evaluation.report import render, svg_chart


def test_chart_labels_its_range_and_plots_every_step():
    svg = svg_chart([{"step": 2, "k": 0.5}, {"step": 4, "k": 0.9}, {"step": 6, "k": 0.75}], "k")
    assert svg.count("<circle") == 3
    assert 'class="ymax"' in svg and ">0.9000</text>" in svg and ">0.5000</text>" in svg
    assert svg_chart([{"step": None, "k": 1.0}], "k") == ""


def test_page_marks_the_best_checkpoint_and_escapes_prompts(tmp_path):
    (tmp_path / "grids").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "grids" / "prompt-00.png")
    rows = [{"step": s, **{k: v for k in HEADLINE}} for s, v in ((5, 0.1), (10, 0.3))]
    metrics = {**rows[1], "best_checkpoint": {"step": 10, "by": "style_gain", "value": 0.3}}
    page = render(
        metrics,
        rows,
        [tmp_path / "grids" / "prompt-00.png"],
        ["<b>girl</b> & boy"],
        ["base", "LoRA x1.0"],
        tmp_path,
    )
    assert '<tr class="best"><td>10</td>' in page and '<tr class=""><td>5</td>' in page
    assert 'src="grids/prompt-00.png"' in page and "&lt;b&gt;girl&lt;/b&gt; &amp; boy" in page


def test_the_readme_grid_is_the_demo_s_grids_side_by_side(tmp_path):
    """docs/demo-grid.png (make readme-grid): each grid pasted as drawn, 10 px apart."""
    import numpy as np
    import pytest
    from PIL import Image

    from kshd_world.readme_grid import main

    grids = tmp_path / "grids"
    grids.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (32, 64), colour).save(grids / f"prompt-{i:02d}.png")
    out = tmp_path / "docs" / "demo-grid.png"
    assert main(["--grids", str(grids), "--out", str(out)]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB"), int)
    assert sheet.shape == (64, 32 + 10 + 32, 3)
    assert np.abs(sheet[:, :32] - (200, 30, 30)).max() <= 4
    assert (sheet[:, 32:42] == 255).all() and np.abs(sheet[:, 42:] - (30, 30, 200)).max() <= 4
    with pytest.raises(FileNotFoundError, match="make demo"):
        main(["--grids", str(tmp_path / "none"), "--out", str(out)])
