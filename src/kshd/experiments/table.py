"""The comparison as a Markdown table (`reports/compare/table.md`): what a README or an issue
quotes when it says which setting drew the style best, measured."""

from __future__ import annotations

from collections.abc import Sequence

from kshd.experiments.finished import Experiment

# The columns an artist chooses a method by: how much style, how much the trigger phrase
# carries it, how well the prompt is still followed, and what the run cost.
COLUMNS = {
    "style_gain": "style_gain",
    "trigger_gain": "trigger_gain",
    "clip_score": "clip_score",
    "train.adapter_mb": "file MB",
    "train.images_per_s": "images/s",
    "train.peak_rss_mb": "peak RSS MB",
}


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")


def implied_by_kind(exps: Sequence[Experiment], params: Sequence[str]) -> set[str]:
    """Params of a variant group (`train.adapter.*`, `train.optimizer.*`) that differ only
    because its `kind` does: within each kind they have one value (a LoKr's factor, Prodigy's
    d_coef), so the kind's column says them."""
    implied = set()
    for param in params:
        node, _, key = param.rpartition(".")
        kind = f"{node}.kind"
        if key == "kind" or kind not in params:
            continue
        values: dict[str, set[str]] = {}
        for e in exps:
            values.setdefault(str(e.params.get(kind)), set()).add(str(e.params.get(param)))
        if all(len(v) == 1 for v in values.values()):
            implied.add(param)
    return implied


def markdown_table(exps: Sequence[Experiment], params: Sequence[str]) -> str:
    """One row per experiment, best `style_gain` first: the differing params (less those a
    group's kind implies), then COLUMNS (a metric an experiment lacks, e.g. from an older run,
    is left empty)."""
    params = [p for p in params if p not in implied_by_kind(exps, params)]
    ranked = sorted(exps, key=lambda e: -e.metrics.get("style_gain", float("-inf")))
    head = ["experiment", *params, *COLUMNS.values(), "best checkpoint"]
    rows = [
        [
            e.name,
            *(_cell(e.params.get(p)) for p in params),
            *(_cell(e.metrics.get(m)) for m in COLUMNS),
            _cell(e.best_checkpoint.get("step")),
        ]
        for e in ranked
    ]
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines) + "\n"
