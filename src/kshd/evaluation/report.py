"""reports/index.html: one offline page with the grids, the metrics and the checkpoint curves.

No scripts, fonts or styles from a network: images are referenced relative to the page and the
curves are inline SVG, so the folder can be opened anywhere, or attached to a DVC experiment.
"""

from __future__ import annotations

import html
from pathlib import Path

from kshd.evaluation.evaluate import HEADLINE

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}th{background:#f4f4f4}figure{margin:1.5rem 0}img{max-width:100%;
image-rendering:pixelated;border:1px solid #ddd}figcaption{font-size:.9rem;color:#555}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.best{background:#fff3c4}
"""


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def svg_chart(rows: list[dict], key: str, width: int = 260, height: int = 150) -> str:
    """A small line chart of `key` against step; points labelled with their step."""
    pts = [(r["step"], r[key]) for r in rows if r.get("step") is not None]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 24

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"><title>step {x}: {y:.4f}</title></circle>'
        for x, y in pts
    )
    return (
        f'<svg role="img" aria-label="{key} by step" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><text x="{pad}" y="14" font-size="12">{key}'
        f'</text><polyline fill="none" stroke="#3366cc" stroke-width="2" points="{line}"/>'
        f'{dots}<text class="ymax" x="{width - 2}" y="{pad}" font-size="10" '
        f'text-anchor="end">{y1:.4f}</text><text class="ymin" x="{width - 2}" '
        f'y="{height - pad}" font-size="10" text-anchor="end">{y0:.4f}</text>'
        f'<text x="{pad}" y="{height - 6}" font-size="10">step {x0}</text>'
        f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"step {x1}</text></svg>"
    )


SKETCH_CAPTION = "line art | base | LoRA | the drawing"
SKETCH_KEYS = ("sketch_structure", "sketch_style")


def _sketch(metrics: dict, sketches: list[Path], page_dir: Path) -> str:
    """The sketch-to-style section: its numbers, then one row per held-out drawing."""
    if not sketches:
        return ""
    rows = "".join(
        f"<tr><th>{k}</th><td>{_fmt(metrics.get(k))}</td><td>{_fmt(metrics.get(f'{k}_base', ''))}"
        "</td></tr>"
        for k in SKETCH_KEYS
    )
    figures = "".join(
        f'<figure><img src="{html.escape(g.relative_to(page_dir).as_posix())}" '
        f'alt="sketch {i}"><figcaption>{SKETCH_CAPTION}</figcaption></figure>'
        for i, g in enumerate(sketches)
    )
    return (
        "<h2>Sketch to style</h2><p>Each held-out drawing's line art redrawn through the "
        "ControlNet: the lines kept (<code>sketch_structure</code>, 1 = all of them and no "
        "others) and the style (<code>sketch_style</code>, against the other drawings); style "
        f"gain {_fmt(metrics.get('sketch_style_gain', ''))}.</p>"
        f"<table><tr><th>metric</th><th>LoRA</th><th>base model</th></tr>{rows}</table>{figures}"
    )


FAMILIES = {"sd1": "SD 1.x", "sdxl": "SDXL"}


def render(
    metrics: dict,
    curve: list[dict],
    grids: list[Path],
    prompts: list[str],
    row_labels: list[str],
    page_dir: Path,
    sketches: list[Path] = (),
) -> str:
    """The page as a string; `grids` (and the sketch rows) are linked relative to `page_dir`.
    A training's EMA (`ema_` metrics) gets a column of its own in both tables."""
    ema = any(f"ema_{k}" in metrics for k in HEADLINE)
    head_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(metrics.get(k))}</td>"
        + (f"<td>{_fmt(metrics.get(f'ema_{k}', ''))}</td>" if ema else "")
        + f"<td>{_fmt(metrics.get(f'{k}_base', ''))}</td></tr>"
        for k in HEADLINE
    )
    columns = [*HEADLINE, *(f"ema_{k}" for k in HEADLINE if any(f"ema_{k}" in r for r in curve))]
    best = metrics.get("best_checkpoint", {}).get("step")
    curve_rows = "".join(
        f'<tr class="{"best" if r["step"] == best else ""}"><td>{_fmt(r["step"])}</td>'
        + "".join(f"<td>{_fmt(r.get(k, ''))}</td>" for k in columns)
        + "</tr>"
        for r in curve
    )
    ema_th = "<th>EMA</th>" if ema else ""
    best_ema = " (EMA)" if metrics.get("best_checkpoint", {}).get("ema") else ""
    figures = "".join(
        f'<figure><img src="{html.escape(g.relative_to(page_dir).as_posix())}" '
        f'alt="grid for prompt {i}"><figcaption>{html.escape(p)}<br>rows: '
        f"{html.escape(' | '.join(row_labels))}; columns: seeds</figcaption></figure>"
        for i, (g, p) in enumerate(zip(grids, prompts, strict=True))
    )
    charts = "".join(svg_chart(curve, k) for k in HEADLINE)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>KSH Drawing AI — evaluation</title>
<style>{STYLE}</style></head><body>
<h1>KSH drawing style — evaluation</h1>
<p class="family">base model family: {FAMILIES.get(metrics.get("model_family"), "?")}</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>LoRA</th>{ema_th}<th>base model</th></tr>{head_rows}</table>
<p>style gain: {_fmt(metrics.get("style_gain", ""))}; trigger gain:
{_fmt(metrics.get("trigger_gain", ""))}; best checkpoint: step {_fmt(best)}{best_ema}
by {_fmt(metrics.get("best_checkpoint", {}).get("by", ""))}</p>
<h2>Checkpoints</h2><div class="charts">{charts}</div>
<table><tr><th>step</th>{"".join(f"<th>{k}</th>" for k in columns)}</tr>{curve_rows}</table>
<h2>Samples</h2>{figures}
{_sketch(metrics, list(sketches), page_dir)}
</body></html>
"""
