"""`<lora:name:weight>` in a prompt, A1111's way: each tag loads the LoRA of that name (a file
stem, as A1111's Lora tab names them: `ksh_drawing_style`, `checkpoint-40`, a file of
`generate.gui.lora_dirs`) at that weight (1 when left out), several at once; the tags are taken
out of the text the text encoder reads and kept in the prompt written to the PNG. A name found
nowhere is said once for the job and drawing goes on without it.

The LoRA of the chooser (`generate.lora`, the studio's LoRA) is one more LoRA in use at the
request's `lora_scale`; a tag naming it sets its weight instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kshd.adapters.weights import adapter_identity
from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.pnginfo import lora_hash, parse_parameters
from kshd.drawing.request import RequestError

TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")


def split_tags(prompt: str) -> tuple[str, list[tuple[str, str]]]:
    """(the prompt without its `<lora:...>` tags, [(name, weight as written)]), as A1111 takes
    them out (the text around them stays as it is)."""
    tags = [(m.group(1).strip(), (m.group(2) or "").strip()) for m in TAG.finditer(prompt)]
    return TAG.sub("", prompt), tags


@dataclass
class LoraPlan:
    """What a request's tags ask for: {path: weight} of the LoRAs found (the chooser's LoRA by
    its path too), their A1111 names, and the names found nowhere."""

    weights: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # path -> name
    unknown: list[str] = field(default_factory=list)


def plan(prompt: str, chosen: tuple[str, str] | None, catalog: LoraCatalog | None,
         max_weight: float) -> LoraPlan:  # fmt: skip
    """The LoRAs the prompt's tags name; `chosen`: (name, path) of the chooser's LoRA, found
    first. A weight beyond `max_weight` (generate.limits.max_lora_scale) is refused."""
    out = LoraPlan()
    _, tags = split_tags(prompt)
    found = catalog.by_name() if tags and catalog is not None else {}
    if chosen:
        found = {**found, chosen[0]: chosen[1]}
    for name, written in tags:
        try:
            weight = float(written) if written else 1.0
        except ValueError:
            raise RequestError(
                "prompt", f"<lora:{name}:{written}>: the weight is not a number"
            ) from None
        if abs(weight) > max_weight:
            raise RequestError("prompt", f"<lora:{name}:{written}>: the weight must be from "
                               f"{-max_weight:g} to {max_weight:g}")  # fmt: skip
        path = found.get(name)
        if path is None:
            out.unknown += [name] if name not in out.unknown else []
            continue
        out.weights[path], out.names[path] = weight, name  # the last tag of a name wins
    return out


def unknown_note(names: list[str], catalog: LoraCatalog | None) -> str:
    """One line: the names no LoRA answers to and where they were looked for."""
    where = catalog.roots() if catalog is not None else "no LoRA folders configured"
    said = ", ".join(f"<lora:{n}>" for n in names)
    return f"{said}: no LoRA of that name in {where}; drawn without it"


def not_here(text: str, model: tuple[str, str | None], loras: dict[str, str]) -> str | None:
    """One line naming what of a `parameters` text is not here: its model (`Model`, `Model
    hash`) when not the base in use (`model`: its name and hash), and each of its LoRAs
    (`Lora hashes`, the prompt's tags) that `loras` ({name: hash}) lacks or holds another file
    of; None when all of it is here."""
    params = parse_parameters(text)
    said = []
    name, digest = params.get("Model"), params.get("Model hash")
    if (name and name != model[0]) or (digest and model[1] and digest != model[1]):
        said.append(f"model {name or '?'}" + (f" [{digest}]" if digest else ""))
    hashes = _lora_hashes(params.get("Lora hashes", ""))
    for tag_name, _ in split_tags(params["Prompt"])[1]:
        hashes.setdefault(tag_name, None)
    for lora, digest in hashes.items():
        if lora not in loras or (digest and loras[lora] != digest):
            said.append(f"LoRA {lora}" + (f" [{digest}]" if digest else ""))
    return "not here: " + "; ".join(said) if said else None


def _lora_hashes(value: str) -> dict[str, str | None]:
    """A1111's `Lora hashes`: "name: hash, name2: hash2"."""
    out: dict[str, str | None] = {}
    for item in value.split(","):
        name, _, digest = item.strip().rpartition(":")
        if name.strip():
            out[name.strip()] = digest.strip() or None
    return out


def local_hashes(catalog: LoraCatalog | None, chosen: tuple[str, str] | None) -> dict[str, str]:
    """{name: A1111 hash} of the LoRAs here: the chooser's and the catalog's."""
    found = catalog.by_name() if catalog is not None else {}
    if chosen:
        found = {**found, chosen[0]: chosen[1]}
    out = {}
    for name, path in found.items():
        try:
            out[name] = lora_hash(adapter_identity(path)[1])
        except (OSError, ValueError):
            continue
    return out
