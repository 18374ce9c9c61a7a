"""pyproject's version floors: what the code needs, and what this environment satisfies."""

from __future__ import annotations

import importlib.metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from .conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project itself supports 3.10

# The oldest releases with the APIs the code calls (checked against the installed sources).
NEEDED = {
    "transformers": "5.0",  # get_image_features(...).pooler_output
    "diffusers": "0.42",  # from_pretrained(dtype=...), the LoRA loaders used by the engine
    "peft": "0.21",  # text-encoder LoRA through peft on the pinned stack
    "gradio": "6.0",
}


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    return [Requirement(r) for r in project["dependencies"] + extras]


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert floors, f"{req.name} has no >= floor in pyproject.toml"
    return max(floors)


def test_floors_are_at_least_what_the_code_needs():
    floors = {r.name: _floor(r) for r in _requirements()}
    for name, needed in NEEDED.items():
        assert floors[name] >= Version(needed), f"{name} floor {floors[name]} < {needed}"


def test_this_environment_satisfies_every_floor():
    for req in _requirements():
        installed = Version(importlib.metadata.version(req.name))
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed}"
