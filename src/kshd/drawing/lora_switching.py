"""The engine's adapter (LoRA or another kind, `kshd.adapters`): loaded, merged at a strength,
swapped for another between jobs, with the base model's weights restored exactly each time (a
mixin of `Engine`, which holds the pipeline `txt2img`, the lock and the `lora_*` fields)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from kshd.adapters.fit import LoraRefused
from kshd.adapters.weights import PIPE_NAME, AdapterWeights, adapter_file, open_weights
from kshd.drawing.pnginfo import lora_hash
from kshd.training.checkpoints import is_checkpoint

log = logging.getLogger(__name__)
ADAPTER = PIPE_NAME
LORA_KEY = "generate.lora"  # the key a refused LoRA is named by (the studio's chooser sets it)


def _refused(path: str, exc: Exception) -> LoraRefused:
    """One line for a LoRA that failed to open or load (the loader's message, its first line:
    a size mismatch lists every layer)."""
    first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return LoraRefused(f"{LORA_KEY}: {path}: not a LoRA this model can load ({first})")


class LoraSwitching:
    """Adapter loading, strength and swapping for `Engine` (see the module's docstring)."""

    _weights: AdapterWeights | None = None  # what is loaded (its kind, file or tensors)

    def _load_lora(self, path: str, checkpoint_strength: float | None = None) -> None:
        """An adapter folder or file; or a training checkpoint (its record says its kind and
        strength; `checkpoint_strength`, the run's alpha / rank, for one written before
        checkpoints recorded them). One that does not fit the base is refused before it is
        touched (LoraRefused, one line); one that fails to load, in one line too."""
        try:
            weights = open_weights(path, checkpoint_strength)
        except FileNotFoundError:
            raise
        except Exception as exc:  # not safetensors, a checkpoint without its strength...
            raise _refused(path, exc) from exc
        weights.check_fits(self.txt2img, LORA_KEY, path, self.settings.pretrained)
        self._weights = weights
        try:
            weights.attach(self.txt2img, ADAPTER)
        except Exception as exc:
            raise _refused(path, exc) from exc
        self.lora_name, self.lora_hash = weights.name, lora_hash(weights.hashed)
        self.lora_path = str(path)
        self._lora_changed()
        log.info("%s %s (%s) from %s", weights.adapter.kind, self.lora_name, self.lora_hash, path)

    def _lora_changed(self) -> None:
        """Called after each LoRA change (the engine drops what holds the old one)."""

    def _adapter_into(self) -> Callable | None:
        """Loads the adapter in use into another UNet of the family (unmerged): for a pipeline
        with a UNet of its own; None without one."""
        weights = self._weights if self.lora_path is not None else None
        if weights is None:
            return None
        return lambda unet: weights.attach_unet(self.txt2img, unet, ADAPTER)

    def set_lora(self, path: str | None, checkpoint_strength: float | None = None) -> None:
        """Another LoRA (None: the base model alone), between jobs: the base weights come back
        exactly before the new one is loaded; the base model is not reloaded. One that cannot
        load leaves the one in use (a missing file is refused before it is touched)."""
        with self.lock:
            if path and not is_checkpoint(path):
                adapter_file(path)
            previous = self.lora_path
            self._unload_lora()
            if not path:
                return
            try:
                self._load_lora(path, checkpoint_strength)
            except Exception:
                if self._weights is not None:  # whatever part of it was attached
                    self._weights.adapter.detach(self.txt2img)
                self._weights = None
                self.lora_name = self.lora_hash = self.lora_path = None
                if previous:
                    self._load_lora(previous, checkpoint_strength)
                raise

    def _unload_lora(self) -> None:
        if self.lora_name is not None:
            self._restore_base()
            self._weights.adapter.detach(self.txt2img)
            self.lora_name = self.lora_hash = self.lora_path = None
            self._weights, self._originals, self._scale = None, {}, None
            self._lora_changed()

    def _lora_layers(self):
        """The adapter's layers in the UNet and the text encoders: one strength merges all."""
        for part in ("unet", "text_encoder", "text_encoder_2"):
            model = getattr(self.txt2img, part, None)
            if model is None:
                continue
            for name, module in self._weights.adapter.layers(model):
                yield f"{part}.{name}", module

    @torch.no_grad()
    def set_lora_scale(self, scale: float) -> None:
        """Merge the adapter into the UNet and text encoder at `scale`; a new scale restores the
        base.

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
        self._weights.adapter.enable(self.txt2img, scale != 0.0)
        if scale != 0.0:
            for _, module in layers:
                module.set_scale(ADAPTER, scale)
                module.merge(adapter_names=[ADAPTER])
        self._scale = scale

    @torch.no_grad()
    def _restore_base(self) -> None:
        """Unmerge every merged adapter layer and put the saved base weights back, exactly."""
        for name, module in self._lora_layers():
            if module.merged:
                module.unmerge()
                module.get_base_layer().weight.copy_(self._originals[name])
