"""Which processes train: one, or several under DDP (CUDA, or gloo on the CPU), as accelerate
sees them; the train stage asks before any model loads."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch


def use_cpu_processes() -> bool:
    """Several processes and no CUDA: DDP over gloo on the CPU (accelerate needs cpu=True)."""
    from accelerate.utils import parse_flag_from_env

    world = int(os.environ.get("WORLD_SIZE", "1"))
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (
        world > 1 and not torch.cuda.is_available()
    )


def process_state():
    """accelerate's PartialState, created the same way the loop's Accelerator will be."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu_processes())


def device_record(environ: Mapping[str, str] = os.environ) -> dict:
    """What this process trains on, for the metrics and the wandb run: the GPUs it was given
    (CUDA_VISIBLE_DEVICES, None if unset; `kshd sweep --gpus` gives each experiment one), the
    first one's name ("cpu" without CUDA) and how many it sees."""
    cuda = torch.cuda.is_available()
    return {
        "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
        "name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "count": torch.cuda.device_count() if cuda else 0,
    }
