"""The demo world's Danbooru tags, and the two halves of a WD v3 tagger's contract.

A world character's attributes name its tags (`tags_of`): `1girl`/`1boy` and `solo`,
`<colour>_hair`, `long_hair`/`short_hair`, `<colour>_eyes`, its clothes and what they are made
of, `<colour>_background` with `simple_background`, and the rating `general`. Every name, tag id
and count is the row of SmilingWolf/wd-eva02-large-tagger-v3's `selected_tags.csv`, so a caption
written by the world's tagger reads as a real WD v3 tagger's would. Clothes in Danbooru's words,
with Danbooru's implications (a coloured tag implies the plain one, `serafuku` implies
`school_uniform` and `sailor_collar`):

- school uniform (navy jacket, white V, red tie): `school_uniform`, `blazer`, `necktie`,
  `red_necktie`;
- sailor uniform (white top, navy sailor collar, red scarf knot): `serafuku` (Danbooru's tag
  for a sailor-style school uniform), `school_uniform`, `sailor_collar`, `neckerchief`,
  `red_neckerchief`;
- hoodie (grey, hood round the neck, two cords): `hoodie`, `grey_hoodie`, `hood_down`,
  `drawstring`;
- t-shirt (orange): `t-shirt`, `shirt`, `orange_shirt`.

The contract: kohya's `finetune/tag_images_by_wd14_tagger.py` preprocessing (`wd_preprocess`)
and `selected_tags.csv`'s columns `tag_id,name,category,count` (category 9 rating, 0 general,
4 character: the world has no named characters, so none).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# kohya's WD preprocessing, the product's own: the world's tagger trains on what it will see
from kshd.captioners.wd_tagger import preprocess as wd_preprocess

RATING, GENERAL, CHARACTER = 9, 0, 4
# Danbooru tag id and post count, as in wd-eva02-large-tagger-v3's selected_tags.csv
RATINGS: dict[str, tuple[int, int]] = {
    "general": (9999999, 1589178),
    "sensitive": (9999998, 3994361),
    "questionable": (9999997, 892496),
    "explicit": (9999996, 706509),
}
GENERAL_TAGS: dict[str, tuple[int, int]] = {
    "1girl": (470575, 5113288), "solo": (212816, 4253220), "long_hair": (13197, 3645082),
    "short_hair": (15080, 1904624), "blue_eyes": (10959, 1490640),
    "simple_background": (412368, 1420030), "shirt": (12590, 1382452),
    "blonde_hair": (87788, 1311581), "brown_hair": (16867, 1267072),
    "black_hair": (13200, 1225953), "white_background": (515193, 1161729),
    "1boy": (540830, 1129709), "red_eyes": (8526, 1081613), "brown_eyes": (16578, 747352),
    "green_eyes": (10960, 711390), "blue_hair": (10953, 704952),
    "school_uniform": (16509, 688100), "purple_eyes": (15654, 669153),
    "pink_hair": (11429, 551851), "red_hair": (5403, 424264), "necktie": (384774, 360748),
    "serafuku": (268819, 285501), "sailor_collar": (389378, 218314),
    "neckerchief": (438623, 134018), "hoodie": (202817, 106750),
    "blue_background": (580545, 88552), "pink_background": (584749, 71378),
    "hood_down": (589398, 70183), "blazer": (6059, 60883), "red_necktie": (492682, 56695),
    "t-shirt": (379387, 50843), "yellow_background": (593298, 45624),
    "red_neckerchief": (1388801, 38847), "green_background": (593297, 31415),
    "drawstring": (547289, 18745), "orange_shirt": (710372, 9944),
    "grey_hoodie": (1391985, 5260),
}  # fmt: skip
CLOTHES_TAGS: dict[str, tuple[str, ...]] = {
    "school uniform": ("school_uniform", "blazer", "necktie", "red_necktie"),
    "sailor uniform": ("school_uniform", "serafuku", "sailor_collar", "neckerchief",
                       "red_neckerchief"),
    "hoodie": ("hoodie", "grey_hoodie", "hood_down", "drawstring"),
    "t-shirt": ("t-shirt", "shirt", "orange_shirt"),
}  # fmt: skip
# group -> (the attribute it reads, value -> its tags)
GROUPS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "count": ("girl", {"girl": ("1girl", "solo"), "boy": ("1boy", "solo")}),
    "hair_colour": ("hair", {h: (f"{h}_hair",) for h in
                             ("blonde", "black", "brown", "red", "blue", "pink")}),
    "hair_length": ("hair_length", {"long": ("long_hair",), "short": ("short_hair",)}),
    "eyes": ("eyes", {e: (f"{e}_eyes",) for e in ("green", "blue", "brown", "red", "purple")}),
    "clothes": ("clothes", CLOTHES_TAGS),
    "background": ("background", {b: ("simple_background", f"{b}_background") for b in
                                  ("white", "blue", "yellow", "green", "pink")}),
}  # fmt: skip
COLUMNS = ["tag_id", "name", "category", "count"]


def tags_of(attributes: dict[str, str]) -> set[str]:
    """The general tags of a character's attributes (`Character.attributes()`)."""
    return {t for key, values in GROUPS.values() for t in values[attributes[key]]}


def selected_tags() -> list[tuple[int, str, int, int]]:
    """The csv's rows as SmilingWolf orders them: ratings, then general tags by count."""
    rows = [(i, name, RATING, n) for name, (i, n) in RATINGS.items()]
    general = sorted(GENERAL_TAGS.items(), key=lambda kv: -kv[1][1])
    return rows + [(i, name, GENERAL, n) for name, (i, n) in general]


def write_selected_tags(path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(selected_tags())


def read_selected_tags(path: Path) -> tuple[list[str], list[int]]:
    """(names, categories) in the model's output order."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["name"] for r in rows], [int(r["category"]) for r in rows]


class OnnxTagger:
    """A WD v3 folder (`model.onnx`, `selected_tags.csv`) run with onnxruntime on the CPU."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        inp = self.session.get_inputs()[0]
        self.input_name, self.size = inp.name, int(inp.shape[1])
        self.names, self.categories = read_selected_tags(folder / "selected_tags.csv")

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = np.stack([wd_preprocess(im, self.size) for im in images])
        return self.session.run(None, {self.input_name: batch})[0]


def predicted(probs: np.ndarray, names: list[str], categories: list[int], threshold: float):
    """(rating by argmax, general tags at or above the threshold), as kohya picks them."""
    ratings = [i for i, c in enumerate(categories) if c == RATING]
    rating = names[ratings[int(np.argmax(probs[ratings]))]]
    general = {n for n, c, p in zip(names, categories, probs, strict=True)
               if c == GENERAL and p >= threshold}  # fmt: skip
    return rating, general


def accuracy(
    probs: np.ndarray,
    attributes: Sequence[dict[str, str]],
    names: list[str],
    categories: list[int],
    threshold: float,
) -> dict[str, float]:
    """Per group, the share of drawings whose tags in that group are exactly the right ones;
    `exact`: every general tag right and the rating `general`."""
    hits = {g: 0 for g in GROUPS} | {"exact": 0}
    for p, attrs in zip(probs, attributes, strict=True):
        rating, tags = predicted(p, names, categories, threshold)
        for group, (key, values) in GROUPS.items():
            universe = {t for ts in values.values() for t in ts}
            hits[group] += (tags & universe) == set(values[attrs[key]])
        hits["exact"] += rating == "general" and tags == tags_of(attrs)
    return {k: round(v / len(attributes), 4) for k, v in hits.items()}
