"""`kshd compare`: one offline page that compares DVC experiments, no wandb account needed.

Params and metrics come from `dvc exp show --json`; the curves and the evaluation grids from
`dvc plots diff --json` (the plots `dvc.yaml` declares). The curves are rendered to inline SVG
with vl-convert and the grids are files beside the page, so nothing is fetched from a network.
The same run writes DVC's own interactive page (`plots/index.html`) with the Vega libraries
inlined instead of loaded from a CDN.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kshd.experiments.dvc import DvcError, exp_show, run_dvc

log = logging.getLogger(__name__)

VEGA_LITE = "5.21"  # DVC's plot templates are Vega-Lite 5
# The offline template for `dvc plots diff/show` (.dvc/config `plots.html_template`).
TEMPLATE = "tmp/offline-plots.html"
# Training metrics are shown as `train.<key>`; the evaluation's without a prefix.
NOT_COMPARED = ("latents", "by_strength", "resumed_from")


class CompareError(DvcError):
    """Nothing (or not what was asked) to compare; the message says how to get there."""


@dataclass
class Experiment:
    name: str
    rev: str
    params: dict[str, object]
    metrics: dict[str, float]
    best_checkpoint: dict = field(default_factory=dict)


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def _numbers(data: Mapping, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": v
        for k, v in flatten({k: v for k, v in data.items() if k not in NOT_COMPARED}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _experiment(name: str, rev: str, data: Mapping, files: Mapping[str, str]) -> Experiment | None:
    """One finished experiment (its evaluation metrics exist), or None."""
    metrics = data.get("metrics") or {}
    found = {f: (metrics.get(f) or {}).get("data") for f in files}
    evaluation = next((d for f, d in found.items() if d and files[f] == ""), None)
    if not evaluation:
        return None
    numbers: dict[str, float] = {}
    for path, prefix in files.items():
        numbers |= _numbers(found[path] or {}, prefix)
    best = evaluation.get("best_checkpoint") or {}
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    if "model_family" in evaluation:  # read from the model by the evaluation, not a param
        params["model.family"] = evaluation["model_family"]
    return Experiment(name, rev, params, numbers, best)


def experiments_from_show(show: list, files: Mapping[str, str]) -> list[Experiment]:
    """Finished experiments of every baseline in `dvc exp show --json`, in its order.

    `files` maps a metrics file to the prefix of its keys ("" marks the evaluation's file,
    whose presence means the experiment finished). Queued, running and failed ones are left out.
    """
    found = []
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            if state != "success" or not exp.get("revs"):
                continue
            head = exp["revs"][0]
            item = _experiment(exp.get("name") or head["rev"][:7], head["rev"], head["data"], files)
            if item:
                found.append(item)
    return found


def differing(exps: Sequence[Experiment]) -> list[str]:
    """Params whose values are not the same in every experiment, in a stable order."""
    keys = sorted({k for e in exps for k in e.params})
    return [k for k in keys if len({json.dumps(e.params.get(k), default=str) for e in exps}) > 1]


def offline_template(dvc_dir: Path) -> Path:
    """DVC's plot page with Vega, Vega-Lite and vega-embed inlined (no CDN); written once."""
    import vl_convert

    from kshd.fileio import write_text

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
    from kshd.config import load_params

    cfg = load_params(params_file=root / "params.yaml")
    return {
        f"{cfg.output.reports_dir}/metrics.json": "",
        f"{cfg.output.lora_dir}/metrics.json": "train.",
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
    from kshd.experiments.compare_page import render
    from kshd.fileio import write_text

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
    write_text(
        page, render(exps, differing(exps), {p: svg(s) for p, s in curves.items()}, images, out)
    )
    log.info("compared %d experiments (%s): %s", len(exps), ", ".join(revs), page)
    return page
