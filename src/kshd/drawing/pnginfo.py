"""AUTOMATIC1111-style `parameters` text in PNG files, and saving without ever overwriting.

A1111's "PNG Info" tab, civitai and most SD tools read one `parameters` text chunk:

    <prompt>
    Negative prompt: <negative prompt>
    Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234, Size: 512x512, ...

Values holding a comma, colon or newline are JSON-quoted, as A1111 does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from kshd.config.values import CLIP_SKIPS
from kshd.drawing.modes.registry import modes

KEY = "parameters"
NEGATIVE = "Negative prompt:"
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(value: object) -> str:
    text = str(value)
    if not any(c in text for c in ',:\n"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def format_parameters(prompt: str, negative: str, params: dict[str, object]) -> str:
    """The A1111 text: prompt, negative prompt, then `Key: value` pairs in the given order."""
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    lines = [prompt]
    if negative:
        lines.append(f"{NEGATIVE} {negative}")
    return "\n".join([*lines, line])


def parse_parameters(text: str) -> dict[str, str]:
    """A1111's reading of the text: `Prompt`, `Negative prompt` and every key as a string."""
    *lines, last = text.strip().split("\n")
    pairs = _PARAM.findall(last)
    if len(pairs) < 3:  # no parameter line: all of it is prompt
        lines, pairs = [*lines, last], []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative, line = True, line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in pairs:
        out[key.strip()] = json.loads(value) if value.startswith('"') else value
    return out


def lora_hash(path: str | Path) -> str:
    """A1111's LoRA hash (`addnet_hash_safetensors`): sha256 of the bytes after the safetensors
    header, first 12 hex digits, so civitai links an image to the LoRA whatever its metadata."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_size)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def read_parameters(path: str | Path) -> str | None:
    with Image.open(path) as img:
        return img.info.get(KEY)


def save_png(image: Image.Image, text: str, folder: str | Path, seed: int) -> Path:
    """Save as `<n>-<seed>.png` with the next free n; an existing file is never replaced.

    The PNG is written to a temporary name first and hard-linked to its final name, so a
    killed process leaves no half-written image and two writers never share a name.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(KEY, text)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        number = _next_number(folder)
        while True:
            final = folder / f"{number:05d}-{seed}.png"
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp)


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


# A1111 keys -> Request fields (numbers as the fields take them)
# the A1111 keys every mode shares -> Request fields (numbers as the fields take them); a mode's
# own keys are read by the mode (Mode.read_params)
_NUMBERS = {"Steps": ("steps", int), "CFG scale": ("cfg_scale", float), "Seed": ("seed", int)}
_SHARED = {*_NUMBERS, "Prompt", "Negative prompt", "Sampler", "Size", "Model", "Lora hashes",
           "Version", "Model hash", "Model family", "Clip skip"}  # fmt: skip


def _unprefixed(full: str, prefix: str) -> tuple[str, str]:
    """(prefix, prompt) that join back to `full` as the app joins them (request.join_prefix):
    the tab's prefix kept when `full` starts with it, else none, so the drawn prompt is the
    text's."""
    p = prefix.strip()
    if not p:
        return prefix, full
    head = f"{p} " if p.endswith(",") else f"{p}, "
    if full.startswith(head):
        return prefix, full[len(head) :]
    return (prefix, "") if full == p else ("", full)


def _clip_skip(params: dict[str, str], unused: list[str]) -> dict[str, int]:
    """A1111's reading: a text without `Clip skip` was drawn at 1 (A1111 writes it only when
    not 1); a value the app cannot draw at (A1111 goes to 12) is reported unused."""
    value = params.get("Clip skip", "1").strip()
    if value.isdigit() and int(value) in CLIP_SKIPS:
        return {"clip_skip": int(value)}
    unused.append("Clip skip")
    return {}


def request_fields(
    text: str, positive_prefix: str, negative_prefix: str, control_models: dict | None = None
) -> tuple[dict, list[str]]:
    """The Request fields an A1111 `parameters` text (ours or A1111's) gives, for a tab with
    these prefixes, and the keys the app cannot use (reported, never silently dropped). The
    prompt keeps its `<lora:name:w>` tags, as A1111 sends them: each names its LoRA and weight
    (the one in use's too), so the LoRA strength field is 0 (a text without tags was drawn
    without a LoRA, and is drawn so again); the clip skip
    from `Clip skip`, 1 without one (A1111's reading: it overrides the base's); each drawing
    mode reads its own keys (a ControlNet unit: the sketch's settings, its model looked up in
    `control_models`)."""
    from kshd.drawing.request import RequestError, sampler_key

    params = parse_parameters(text)
    full = params["Prompt"].strip()
    out: dict[str, object] = {"lora_scale": 0.0}
    out["positive_prefix"], out["prompt"] = _unprefixed(full, positive_prefix)
    out["negative_prefix"], out["negative_prompt"] = _unprefixed(
        params["Negative prompt"], negative_prefix
    )
    known = _SHARED.union(*(m.param_keys() for m in modes().values()))
    unused = [k for k in params if k not in known]
    for key, (field, kind) in _NUMBERS.items():
        if key in params:
            try:
                out[field] = kind(float(params[key])) if kind is int else kind(params[key])
            except ValueError:
                unused.append(key)
    out |= _clip_skip(params, unused)
    if "Size" in params and (m := re.fullmatch(r"(\d+)x(\d+)", params["Size"])):
        out["width"], out["height"] = int(m.group(1)), int(m.group(2))
    if "Sampler" in params:
        try:
            out["sampler"] = sampler_key(params["Sampler"])
        except RequestError:
            unused.append("Sampler")
    for mode in modes().values():  # a key two modes share (strength) reads the same in both
        fields, not_used = mode.read_params(params, control_models or {})
        out |= fields
        unused += [k for k in not_used if k not in unused]
    return out, unused
