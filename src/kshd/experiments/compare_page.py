"""The comparison page's HTML: a sortable table, the curves overlaid, the grids side by side.

Plain HTML with one small inline script (sorting); images are linked relative to the page.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kshd.experiments.finished import Experiment

# Table columns, in this order when present; `dvc exp show` lists every metric.
COLUMNS = (
    "style_gain",
    "clip_score",
    "style_similarity",
    "memorization",
    "diversity",
    "trigger_gain",
    "train.final_loss",
    "train.mean_loss_last_epoch",
    "train.steps",
    "train.images_per_s",
    "train.seconds",
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}th{background:#f4f4f4}th[data-sort]{cursor:pointer}th.param{background:#eef4ff}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td:first-child{text-align:left;font-weight:600}.row{display:flex;gap:1rem;flex-wrap:wrap}
figure{margin:0 0 1rem}img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:.9rem;color:#555}.note{color:#555;font-size:.9rem}
"""

# Click a header to sort by it; numbers compare as numbers, blanks go last.
SORT_JS = """
document.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], col = th.cellIndex;
  const dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
  th.closest("tr").querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", dir);
  const key = (row) => row.cells[col].dataset.v;
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "") return 1; if (y === "") return -1;
    const d = isNaN(x) || isNaN(y) ? x.localeCompare(y) : Number(x) - Number(y);
    return dir === "ascending" ? d : -d;
  });
  rows.forEach((r) => body.appendChild(r));
}));
"""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return html.escape("" if value is None else str(value))


def _cell(value: object) -> str:
    raw = "" if value is None else str(value)
    return f'<td data-v="{html.escape(raw)}">{_fmt(value)}</td>'


def table(exps: Sequence[Experiment], params: Sequence[str]) -> str:
    metrics = [c for c in COLUMNS if any(c in e.metrics for e in exps)]
    head = "".join(
        [
            '<th data-sort scope="col">experiment</th>',
            *(f'<th data-sort scope="col" class="param">{html.escape(p)}</th>' for p in params),
            *(f'<th data-sort scope="col">{html.escape(m)}</th>' for m in metrics),
            '<th data-sort scope="col">best checkpoint</th>',
        ]
    )
    rows = []
    for e in exps:
        best = e.best_checkpoint
        ema = " EMA" if best.get("ema") else ""  # the EMA of the weights at that step
        label = f"step {best['step']}{ema} ({best.get('by', '')})" if best.get("step") else ""
        cells = [
            f'<td data-v="{html.escape(e.name)}" title="{e.rev}">{html.escape(e.name)}</td>',
            *(_cell(e.params.get(p)) for p in params),
            *(_cell(e.metrics.get(m)) for m in metrics),
            f'<td data-v="{best.get("step", "")}">{html.escape(label)}</td>',
        ]
        rows.append(f'<tr data-exp="{html.escape(e.name)}">{"".join(cells)}</tr>')
    return (
        f'<table id="experiments"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def grids_section(
    exps: Sequence[Experiment], images: Mapping[str, Mapping[str, Path]], page_dir: Path
) -> str:
    """Per prompt, each experiment's grid (same prompt and seeds) next to the others."""
    first = exps[0].params if exps else {}
    prompts, seeds = first.get("evaluate.prompts") or [], first.get("evaluate.seeds") or []
    same = all(
        e.params.get("evaluate.prompts") == prompts and e.params.get("evaluate.seeds") == seeds
        for e in exps
    )
    parts = [
        f'<p class="note">Seeds {html.escape(str(seeds))}; each grid: base model row, then the '
        "LoRA row(s), as in each experiment's <code>reports/index.html</code>."
        + ("" if same else " <strong>The experiments differ in prompts or seeds.</strong>")
        + "</p>"
    ]
    for i, (path, by_exp) in enumerate(sorted(images.items())):
        prompt = prompts[i] if i < len(prompts) else path
        figures = "".join(
            f'<figure data-exp="{html.escape(e.name)}"><img alt="{html.escape(e.name)}: '
            f'{html.escape(str(prompt))}" src="{os.path.relpath(by_exp[e.name], page_dir)}">'
            f"<figcaption>{html.escape(e.name)}</figcaption></figure>"
            for e in exps
            if e.name in by_exp
        )
        parts.append(
            f'<h3>{html.escape(str(prompt))}</h3><div class="row grid-row">{figures}</div>'
        )
    return "".join(parts)


def render(
    exps: Sequence[Experiment],
    params: Sequence[str],
    curves: Mapping[str, str],
    images: Mapping[str, Mapping[str, Path]],
    page_dir: Path,
) -> str:
    charts = "".join(
        f'<figure class="curve">{svg}<figcaption>{html.escape(path)}</figcaption></figure>'
        for path, svg in curves.items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>KSH Drawing AI: experiments compared</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{len(exps)} experiments compared</h1>"
        '<p class="note">From <code>dvc exp show</code> and <code>dvc plots diff</code>. Click a '
        "column to sort. Params shown are those that differ; "
        '<a href="plots/index.html">DVC\'s interactive plots</a> open offline too.</p>'
        f'{table(exps, params)}<h2>Curves</h2><div class="row">{charts}</div>'
        f"<h2>Evaluation grids</h2>{grids_section(exps, images, page_dir)}"
        f"<script>{SORT_JS}</script></body></html>"
    )
