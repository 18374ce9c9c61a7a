# KSH Drawing AI. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kshd-installed
# Stages run `python -m kshd.stages...`: put the venv first on PATH so DVC finds it; never reach a hub.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH" HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# The suite on TEST_JOBS pytest-xdist workers (0: in this process), each file on one worker,
# the longest files first (tests/durations.json), cores split between workers (tests/conftest.py).
TEST_JOBS ?= 2
XDIST := -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

.PHONY: help setup demo screenshots readme-grid sweep compare gui test test-fast lint format samples world world-models world-controlnet world-tagger clean-demo gpu-check
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the project (does nothing when .venv is current)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# No NVIDIA GPU: take the CPU wheel of torch (a plain install would pull a multi-GB CUDA build).
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	@# An NVIDIA GPU: bitsandbytes too (the cuda extra: 8-bit AdamW of memory=gpu_12gb / gpu_16gb).
	$(PY) -m pip install -q -e ".[gui,dev$$(command -v nvidia-smi >/dev/null 2>&1 && echo ,cuda)]"
	@# CLIP's BPE merges for the tiny models' real tokenizer; its dependencies would pull torchvision.
	$(PY) -m pip install -q --no-deps open-clip-torch==3.3.0
	touch $@

demo: setup ## the five stages on the bundled samples over the demo world's base model (no GPU/network)
	$(RUN) $(PY) -m kshd_world.demo

screenshots: setup ## docs/studio-*.png: the GUI's drawing tabs at 1366x768 (after make demo; Chromium)
	$(RUN) $(PY) -m kshd_world.screenshots --lora models/lora --out docs

readme-grid: setup ## docs/demo-grid.png (the README's picture) from the grids of the last make demo
	$(RUN) $(PY) -m kshd_world.readme_grid

sweep: setup ## a 4-experiment DVC queue sweep of the demo (batch 1,2 x epochs 1,2), then compare
	$(RUN) $(VENV)/bin/kshd sweep --demo -S train.batch_size=1,2 -S train.epochs=1,2

compare: setup ## reports/compare/index.html: the finished DVC experiments side by side (offline)
	$(RUN) $(VENV)/bin/kshd compare

gui: setup ## the web GUI on http://127.0.0.1:7860 with the demo's tiny model (and its LoRA after make demo)
	$(RUN) $(VENV)/bin/kshd gui +experiment=demo

test: setup ## run the whole test suite (what CI runs; TEST_JOBS=2 workers)
	$(RUN) $(PY) -m pytest $(XDIST)

test-fast: setup ## the suite without the slow tests
	$(RUN) $(PY) -m pytest $(XDIST) -m "not slow"

gpu-check: setup ## on a CUDA machine: SD 1.5-shaped fp16/bf16 training at 512 px, resume, drawing (SDXL=1: SDXL-shaped at 1024 px)
	$(RUN) $(PY) bench/gpu_check.py $(if $(SDXL),--sdxl)

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: setup ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

samples: setup ## redraw data/samples/, their captions, data/style_refs/ and data/sample_reg/ (the demo's)
	$(RUN) $(PY) -m kshd_world.samples data/samples data/sample_captions.csv
	$(RUN) $(PY) -m kshd_world.world_refs data/style_refs -n 64 --size 128 --seed 10100
	$(RUN) $(PY) -m kshd_world.world_refs data/sample_reg -n 10 --size 128 --seed 50000 --style plain --captions

world-models: setup ## retrain the demo world's committed models (models/world: SD base + CLIP, ~30 min on 2 cores)
	$(RUN) $(PY) -m kshd_world.pretrain_world models/world --seed 0

world-controlnet: setup ## retrain the demo world's committed line-art ControlNet (models/world-controlnet, ~10 min)
	$(RUN) $(PY) -m kshd_world.world_controlnet models/world/sd models/world-controlnet --seed 0

world-tagger: setup ## retrain the demo world's committed WD v3-format tagger (models/world-tagger, ~5 min on 1 core)
	$(RUN) $(PY) -m kshd_world.world_tagger models/world-tagger --seed 0

world: setup ## draw 200 drawings of the demo world in each style into data/world/ (deterministic)
	$(RUN) $(PY) -m kshd_world.world data/world/ksh -n 200 --style ksh
	$(RUN) $(PY) -m kshd_world.world data/world/plain -n 200 --style plain
