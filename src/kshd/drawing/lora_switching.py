"""The engine's LoRA: loaded, merged at a strength, swapped for another between jobs, with the
base model's weights restored exactly each time (a mixin of `Engine`, which holds the pipeline
`txt2img`, the lock and the `lora_*` fields)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kshd.adapters.lora import DIFFUSERS_FILE, KOHYA_FILE
from kshd.drawing.pnginfo import lora_hash

log = logging.getLogger(__name__)
ADAPTER = "ksh"


def lora_files(path: str | Path) -> tuple[Path, str, Path]:
    """(file to load, name for A1111, file to hash) of a LoRA folder or file."""
    path = Path(path)
    if path.is_dir():
        if not (path / DIFFUSERS_FILE).is_file() and not (path / KOHYA_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {DIFFUSERS_FILE} or {KOHYA_FILE} in the folder")
        load = path / DIFFUSERS_FILE if (path / DIFFUSERS_FILE).is_file() else path / KOHYA_FILE
        named = path / KOHYA_FILE if (path / KOHYA_FILE).is_file() else load
        return load, named.stem, named
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(f"{path}: a LoRA must be an existing .safetensors file or folder")
    return path, path.stem, path


class LoraSwitching:
    """LoRA loading, strength and swapping for `Engine` (see the module's docstring)."""

    def _load_lora(self, path: str, checkpoint_strength: float | None = None) -> None:
        """A LoRA folder or file; or a training checkpoint (raw peft weights, scaled by the
        run's alpha / rank, `checkpoint_strength`)."""
        from kshd.drawing.catalog import is_checkpoint

        if is_checkpoint(path):
            from safetensors.torch import load_file

            from kshd.adapters.lora import diffusers_state

            if checkpoint_strength is None:
                raise ValueError(f"{path}: a training checkpoint needs the run's alpha / rank")
            load = Path(path) / "lora.safetensors"
            state = diffusers_state(load_file(str(load)), checkpoint_strength)
            self.txt2img.load_lora_weights(state, adapter_name=ADAPTER)
            self.lora_name, hashed = Path(path).name, load
        else:
            load, self.lora_name, hashed = lora_files(path)
            self.txt2img.load_lora_weights(
                str(load.parent), weight_name=load.name, adapter_name=ADAPTER, use_safetensors=True
            )
        self.lora_hash, self.lora_path = lora_hash(hashed), str(path)
        self._lora_strength = checkpoint_strength
        self._lora_changed()
        log.info("LoRA %s (%s) from %s", self.lora_name, self.lora_hash, load)

    def _lora_changed(self) -> None:
        """Called after each LoRA change (the engine drops what holds the old one)."""

    def _lora_state(self) -> dict | None:
        """The loaded LoRA's tensors in diffusers' format (None without one): for a pipeline
        with a UNet of its own."""
        from safetensors.torch import load_file

        from kshd.adapters.lora import diffusers_state
        from kshd.drawing.catalog import is_checkpoint

        if self.lora_path is None:
            return None
        if is_checkpoint(self.lora_path):
            raw = load_file(str(Path(self.lora_path) / "lora.safetensors"))
            return diffusers_state(raw, self._lora_strength)
        load, _, _ = lora_files(self.lora_path)
        state, *_ = type(self.txt2img).lora_state_dict(  # SD 1.x's or SDXL's reader
            str(load.parent), weight_name=load.name, use_safetensors=True
        )
        return state

    def set_lora(self, path: str | None, checkpoint_strength: float | None = None) -> None:
        """Another LoRA (None: the base model alone), between jobs: the base weights come back
        exactly before the new one is loaded; the base model is not reloaded. One that cannot
        load leaves the one in use (a missing file is refused before it is touched)."""
        from kshd.drawing.catalog import is_checkpoint

        with self.lock:
            if path and not is_checkpoint(path):
                lora_files(path)
            previous = self.lora_path
            self._unload_lora()
            if not path:
                return
            try:
                self._load_lora(path, checkpoint_strength)
            except Exception as exc:
                self.txt2img.unload_lora_weights()  # whatever part of it was attached
                self.lora_name = self.lora_hash = self.lora_path = None
                if previous:
                    self._load_lora(previous, checkpoint_strength)
                if isinstance(exc, ValueError | OSError):
                    raise
                raise ValueError(f"{path}: not a LoRA this model can load ({exc})") from exc

    def _unload_lora(self) -> None:
        if self.lora_name is not None:
            self._restore_base()
            self.txt2img.unload_lora_weights()
            self.lora_name = self.lora_hash = self.lora_path = None
            self._originals, self._scale = {}, None
            self._lora_changed()

    def _lora_layers(self):
        """The LoRA layers of the UNet and of the text encoders: one strength merges all."""
        from peft.tuners.lora import LoraLayer

        for part in ("unet", "text_encoder", "text_encoder_2"):
            model = getattr(self.txt2img, part, None)
            if model is None:
                continue
            for name, module in model.named_modules():
                if isinstance(module, LoraLayer):
                    yield f"{part}.{name}", module

    @torch.no_grad()
    def set_lora_scale(self, scale: float) -> None:
        """Merge the LoRA into the UNet and text encoder at `scale`; a new scale restores the base.

        peft's own unmerge subtracts the delta again, which leaves float rounding behind, and
        diffusers' `fuse_lora(lora_scale=)` multiplies into the adapter's scaling for good; so the
        base weights are kept (on the CPU) and the scale is set absolutely per layer.
        """
        if self.lora_name is None or scale == self._scale:
            return
        layers = list(self._lora_layers())
        if not self._originals:
            self._originals = {
                n: m.get_base_layer().weight.detach().to("cpu", copy=True) for n, m in layers
            }
        self._restore_base()
        if scale == 0.0:
            self.txt2img.disable_lora()
        else:
            self.txt2img.enable_lora()
            for _, module in layers:
                module.set_scale(ADAPTER, scale)
                module.merge(adapter_names=[ADAPTER])
        self._scale = scale

    @torch.no_grad()
    def _restore_base(self) -> None:
        """Unmerge every merged LoRA layer and put the saved base weights back, exactly."""
        for name, module in self._lora_layers():
            if module.merged:
                module.unmerge()
                module.get_base_layer().weight.copy_(self._originals[name])
