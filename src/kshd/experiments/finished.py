"""The finished experiments in `dvc exp show --json`: their params and metrics, flattened for
comparing, and the params that differ between them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Training metrics are shown as `train.<key>`; the evaluation's without a prefix.
NOT_COMPARED = ("latents", "by_strength", "resumed_from", "device")


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
