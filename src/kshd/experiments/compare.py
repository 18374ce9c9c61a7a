"""`kshd compare`: one offline page that compares DVC experiments, no wandb account needed.

Params and metrics come from `dvc exp show --json`; the curves and the evaluation grids from
`dvc plots diff --json` (the plots `dvc.yaml` declares). The curves are rendered to inline SVG
with vl-convert and the grids are files beside the page, so nothing is fetched from a network.
The same run writes DVC's own interactive page (`plots/index.html`) with the Vega libraries
inlined instead of loaded from a CDN."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from kshd.experiments.compare_page import render
from kshd.experiments.dvc import DvcError, exp_show, run_dvc
from kshd.experiments.finished import Experiment, differing, experiments_from_show
from kshd.experiments.table import markdown_table
from kshd.fileio import write_text

log = logging.getLogger(__name__)

VEGA_LITE = "5.21"  # DVC's plot templates are Vega-Lite 5


# The offline template for `dvc plots diff/show` (.dvc/config `plots.html_template`).
TEMPLATE = "tmp/offline-plots.html"


class CompareError(DvcError):
    """Nothing (or not what was asked) to compare; the message says how to get there."""


def offline_template(dvc_dir: Path) -> Path:
    """DVC's plot page with Vega, Vega-Lite and vega-embed inlined (no CDN); written once."""
    import vl_convert

    path = dvc_dir / TEMPLATE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
        page = (
            '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n'
            "<title>DVC plots</title>\n<script>\n" + bundle + "\n</script>\n"
            "<style>table{border-spacing:15px}</style>\n</head>\n<body>\n{plot_divs}\n</body>\n"
            "</html>\n"
        )
        write_text(path, page)
    return path


def collect_plots(root: Path, names: Sequence[str], out: Path) -> tuple[dict, dict]:
    """`dvc plots diff --json`: curve specs by file, and grid images by file then experiment."""
    raw = json.loads(run_dvc(root, ["plots", "diff", *names, "--json", "-o", str(out)]))
    curves: dict[str, dict] = {}
    images: dict[str, dict[str, Path]] = {}
    for path, entries in (raw.get("data") or {}).items():
        for entry in entries:
            if entry.get("type") == "vega":
                curves[path] = entry["content"]
            elif entry.get("type") == "image":
                for rev in entry.get("revisions") or []:
                    images.setdefault(path, {})[rev] = Path(entry["url"])
    return curves, images


def svg(spec: dict) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE)


def metric_files(root: Path) -> dict[str, str]:
    """The evaluation's and the training's metrics files, from the project's params."""
    from kshd.config.compose import load_params

    cfg = load_params(params_file=root / "params.yaml")
    return {
        f"{cfg.output.reports_dir}/metrics.json": "",
        f"{cfg.output.train_reports_dir}/metrics.json": "train.",
    }


def select(exps: list[Experiment], names: Sequence[str]) -> list[Experiment]:
    if not names:
        return exps
    known = {e.name: e for e in exps}
    if missing := [n for n in names if n not in known]:
        raise CompareError(
            f"no finished experiment named {', '.join(missing)}; finished: "
            f"{', '.join(known) or 'none'} (`dvc exp show`, `dvc queue status`)"
        )
    return [known[n] for n in names]


def build_comparison(root: Path, out: Path, names: Sequence[str] = ()) -> Path:
    """Write `out/index.html` (and DVC's offline `out/plots/index.html`); return the page."""

    show = exp_show(root)
    exps = select(experiments_from_show(show, metric_files(root)), names)
    if not exps:
        raise CompareError(
            f"{root}: no finished experiment to compare. Run some first: "
            "`dvc exp run --queue -S 'train.epochs=10,50'` and `dvc queue start` (or `make sweep`)."
        )
    revs = [e.name for e in exps]
    plots = out / "plots"
    curves, images = collect_plots(root, revs, plots)
    template = offline_template(root / ".dvc")
    run_dvc(root, ["plots", "diff", *revs, "-o", str(plots), "--html-template", str(template)])
    page = out / "index.html"
    params = differing(exps)
    write_text(page, render(exps, params, {p: svg(s) for p, s in curves.items()}, images, out))
    write_text(out / "table.md", markdown_table(exps, params))
    log.info("compared %d experiments (%s): %s", len(exps), ", ".join(revs), page)
    return page
