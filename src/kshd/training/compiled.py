"""train.compile: the UNet's training steps compiled by torch.compile (inductor).

Only the steps run the compiled module. Checkpoints, the adapter files, resuming and validation go
through the original UNet (`original`), which shares every parameter with the compiled one: the
tensors keep their names (no `_orig_mod.` prefix), a checkpoint is the same whether its run was
compiled or not, and validation draws with the weights being trained (eagerly: sampling in eval
mode under no_grad would be another graph to compile for a few images).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
CHANNELS_LAST = True  # the UNet's weights NHWC before compiling (bench/train.py measures both)


def original(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """The module itself, out of accelerate's wrappers (DDP) and torch.compile's."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def compile_unet(unet: torch.nn.Module, mode: str, backend: str, accelerator) -> torch.nn.Module:
    """`unet` as accelerate prepared it (compiled last, as accelerate's own dynamo plugin
    compiles), in torch.compile's `mode` and by its `backend` (train.compile_mode and
    train.compile_backend).

    The weights go channels-last (NHWC) first: on CUDA the layout cuDNN's convolutions run
    fastest in (PyTorch's channels-last guidance; not measured here, no GPU). On
    this project's CPU, an SD 1.5-shaped UNet at 128 px stepped at 0.66-0.72x eager compiled NCHW
    and 1.0-1.5x compiled NHWC (bench/train.py --compile). The saved tensors are contiguous
    whatever the layout (`Adapter.model_tensors`)."""
    if CHANNELS_LAST:
        original(unet, accelerator).to(memory_format=torch.channels_last)
    log.info(
        "train.compile: the UNet's steps are compiled (%s, mode %s); the first steps are slow "
        "while it compiles",
        backend,
        mode,
    )
    # a mode is inductor's option: other backends take none
    return torch.compile(unet, backend=backend, mode=mode if backend == "inductor" else None)
