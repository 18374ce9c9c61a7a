"""A tiny WD-v3-shaped tagger whose scores are known: `model.onnx` (NHWC float32 0-255 BGR in,
probabilities out) and `selected_tags.csv` in SmilingWolf's format, built with onnx.helper.

Each tag's probability is `bias + weight . (mean B, mean G, mean R) / 255`: constants for most
tags, the mean blue and the mean red for two, so the BGR order shows in the tags."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SIZE = 32  # the model's input side (SmilingWolf's v3 taggers: 448)

# (name, category, bias, weight on mean (B, G, R)); categories: 9 rating, 0 general, 4 character
TAGS = [
    ("general", "9", 0.1, (0, 0, 0)),
    ("sensitive", "9", 0.7, (0, 0, 0)),
    ("questionable", "9", 0.1, (0, 0, 0)),
    ("explicit", "9", 0.05, (0, 0, 0)),
    ("1girl", "0", 0.95, (0, 0, 0)),
    ("long_hair", "0", 0.5, (0, 0, 0)),
    ("^_^", "0", 0.9, (0, 0, 0)),
    ("smile", "0", 0.3, (0, 0, 0)),  # under the general threshold
    ("blue_background", "0", 0.0, (1, 0, 0)),  # the mean blue
    ("red_background", "0", 0.0, (0, 0, 1)),  # the mean red
    ("simple_background", "0", 0.6, (0, 0, 0)),
    ("hatsune_miku", "4", 0.9, (0, 0, 0)),
    ("kita_ikuyo_(bocchi_the_rock!)", "4", 0.6, (0, 0, 0)),  # under 0.85, over 0.35
]


def scores(bgr_mean: np.ndarray) -> np.ndarray:
    """The probabilities the model gives an image whose channel means (B, G, R) these are."""
    weights = np.array([t[3] for t in TAGS], dtype=np.float32)
    return np.array([t[2] for t in TAGS], dtype=np.float32) + weights @ (bgr_mean / 255)


def write_tiny_tagger(folder: Path, batch: int | str = "batch") -> Path:
    """`folder` with model.onnx and selected_tags.csv (opset 17; a dynamic batch axis unless
    `batch` is a number, as in taggers exported for a fixed batch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([t[3] for t in TAGS], dtype=np.float32).T  # (3, tags)
    bias = np.array([t[2] for t in TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Div", ["mean", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["weighted"]),
            helper.make_node("Add", ["weighted", "bias"], ["output"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, len(TAGS)])],
        [
            numpy_helper.from_array(np.array(255, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows((9000 + i, name, cat, 100 - i) for i, (name, cat, _, _) in enumerate(TAGS))
    return folder
