"""pyproject's version floors: what the code needs, and what this environment satisfies."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess

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


# extras that only a machine with an NVIDIA GPU installs (`make setup` adds them there)
CUDA_EXTRAS = ("cuda",)


def _requirements(skip: tuple[str, ...] = ()) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [
        r for name, reqs in project["optional-dependencies"].items() if name not in skip
        for r in reqs
    ]  # fmt: skip
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
    for req in _requirements(skip=() if shutil.which("nvidia-smi") else CUDA_EXTRAS):
        installed = Version(importlib.metadata.version(req.name))
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed}"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("gpu", [True, False])
def test_make_setup_installs_bitsandbytes_where_nvidia_smi_is(tmp_path, gpu):
    """The 8-bit AdamW of memory=gpu_12gb / gpu_16gb needs bitsandbytes: `make setup` installs
    the `cuda` extra that holds it on a machine with an NVIDIA GPU (nvidia-smi on PATH), and
    not elsewhere (CUDA only). The Makefile's own recipe, run with a python that records."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pip.log"}\n')
    python.chmod(0o755)
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["make", "-s", "-B", "-C", str(ROOT), f"VENV={venv}", f"{venv}/.kshd-installed"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    installs = (tmp_path / "pip.log").read_text().splitlines()
    [project] = [line for line in installs if " -e " in line]
    extras = project.split("[", 1)[1].rstrip("]").split(",")
    assert ("cuda" in extras) == gpu and {"gui", "dev"} <= set(extras)
    project_toml = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(r.startswith("bitsandbytes") for r in project_toml["optional-dependencies"]["cuda"])
