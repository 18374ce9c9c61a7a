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
from kshd.drawing.prompt_loras import LoraPlan, local_hashes, not_here, plan
from kshd.drawing.request import Request
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

    _weights: AdapterWeights | None = None  # the chooser's LoRA (its kind, file or tensors)
    _extras: dict[str, tuple[str, AdapterWeights]]  # the prompt's: {path: (name, weights)}
    _scales: dict[str, float] | None = None  # {adapter name: scale} merged (None: none)
    _strength: float | None = None  # alpha / rank of checkpoints that record none

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
        self._strength = checkpoint_strength
        self.lora_name, self.lora_hash = weights.name, lora_hash(weights.hashed)
        self.lora_path = str(path)
        self._lora_changed()
        log.info("%s %s (%s) from %s", weights.adapter.kind, self.lora_name, self.lora_hash, path)

    def not_here(self, text: str) -> str | None:
        """One line naming the model and LoRAs of an A1111 `parameters` text that are not the
        base in use and the LoRAs found here (by name, and by hash where it gives one)."""
        chosen = (self.lora_name, self.lora_path) if self.lora_name else None
        hashes = local_hashes(self.catalog, chosen)
        return not_here(text, (self.model_name, self.model_hash), hashes)

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
        self._detach_all()  # the prompt's LoRAs too: attached again by the next job that names them
        if self.lora_name is not None:
            self.lora_name = self.lora_hash = self.lora_path = None
            self._weights, self._originals = None, {}
            self._lora_changed()

    def _kinds(self) -> list[type]:
        """The adapter kinds attached: the chooser's and the prompt's."""
        found = [self._weights] if self._weights is not None else []
        found += [w for _, w in self._extras.values()]
        return list(dict.fromkeys(w.adapter for w in found))

    def _detach_all(self) -> None:
        """Every adapter out of the pipeline, the base weights back exactly."""
        kinds = self._kinds()
        if kinds:
            self._restore_base()
        for kind in kinds:
            kind.detach(self.txt2img)
        self._extras, self._scales = {}, None

    def _use_extras(self, wanted: dict[str, str]) -> list[str]:
        """The prompt's LoRAs ({path: name}, the chooser's left out) attached beside the
        chooser's, each under its own adapter name; one that does not fit or load is left out
        and said (one line each), the others drawn."""
        notes: list[str] = []
        while set(wanted) != set(self._extras):
            self._detach_all()
            if self._weights is not None:
                self._weights.attach(self.txt2img, ADAPTER)
            failed = None
            for i, (path, name) in enumerate(wanted.items()):
                try:
                    strength = self._strength or self.settings.checkpoint_strength
                    weights = open_weights(path, strength)
                    weights.check_fits(self.txt2img, f"<lora:{name}>", path,
                                       self.settings.pretrained)  # fmt: skip
                    weights.attach(self.txt2img, f"{ADAPTER}_{i}")
                except Exception as exc:  # noqa: BLE001 (said in one line; drawing goes on)
                    first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                    notes.append(first if first.startswith("<lora:") else f"<lora:{name}>: {first}")
                    failed = path
                    break
                self._extras[path] = (f"{ADAPTER}_{i}", weights)
            if failed is not None:
                wanted = {p: n for p, n in wanted.items() if p != failed}
        return notes

    def _lora_layers(self):
        """Every adapter's layers in the UNet and the text encoders (each once)."""
        kinds = self._kinds()
        for part in ("unet", "text_encoder", "text_encoder_2"):
            model = getattr(self.txt2img, part, None)
            if model is None:
                continue
            seen = set()
            for kind in kinds:
                for name, module in kind.layers(model):
                    if name not in seen:
                        seen.add(name)
                        yield f"{part}.{name}", module

    def set_lora_scale(self, scale: float) -> None:
        """The chooser's LoRA merged at `scale` (the prompt's LoRAs at 0)."""
        self.merge_loras({ADAPTER: scale} if self.lora_name is not None else {})

    @torch.no_grad()
    def merge_loras(self, scales: dict[str, float]) -> None:
        """Merge the attached adapters into the UNet and text encoders, each at its scale
        ({adapter name: scale}); new scales restore the base first.

        peft's own unmerge subtracts the delta again, which leaves float rounding behind, and
        diffusers' `fuse_lora(lora_scale=)` multiplies into the adapter's scaling for good; so the
        base weights are kept (on the CPU) and each scale is set absolutely per layer.
        """
        if not self._kinds() or scales == self._scales:
            return
        layers = list(self._lora_layers())
        self._restore_base()
        for n, m in layers:  # unmerged now: a layer's first merge keeps its base weights first
            if n not in self._originals:
                self._originals[n] = m.get_base_layer().weight.detach().to("cpu", copy=True)
        live = {a: s for a, s in scales.items() if s != 0.0}
        for kind in self._kinds():
            kind.enable(self.txt2img, bool(live))
        for _, module in layers:
            held = getattr(module, "scaling", {})
            for name in [a for a in scales if a in held]:
                module.set_scale(name, scales[name])
            if merged := [a for a in live if a in held]:
                module.merge(adapter_names=merged)
        self._scales = dict(scales)

    @torch.no_grad()
    def _restore_base(self) -> None:
        """Unmerge every merged adapter layer and put the saved base weights back, exactly."""
        for name, module in self._lora_layers():
            if module.merged:
                module.unmerge()
                module.get_base_layer().weight.copy_(self._originals[name])

    def lora_plan(self, req: Request) -> LoraPlan:
        """The LoRAs the request's `<lora:name:w>` tags name (`prompt_loras`), looked up among
        the chooser's LoRA and the catalog's; RequestError for a weight out of bounds."""
        chosen = (self.lora_name, self.lora_path) if self.lora_name else None
        return plan(req.full_prompt, chosen, self.catalog, self.limits.max_lora_scale)

    def _drawn_loras(self, req: Request, loras: LoraPlan) -> tuple[str, list[str]]:
        """(the prompt as written to the PNG, the `Lora hashes` items): the tags kept as typed;
        the chooser's LoRA, where no tag names it, added as A1111 would write it."""
        prompt, hashes = req.full_prompt, []
        if self.lora_name is not None:
            scale = loras.weights.get(self.lora_path, req.lora_scale)
            if self.lora_path not in loras.weights and scale != 0:
                prompt += f" <lora:{self.lora_name}:{scale:g}>"
            if scale != 0:
                hashes.append(f"{self.lora_name}: {self.lora_hash}")
        for path, weight in loras.weights.items():
            if path != self.lora_path and path in self._extras and weight != 0:
                if path not in self._hashes:
                    self._hashes[path] = lora_hash(self._extras[path][1].hashed)
                hashes.append(f"{loras.names[path]}: {self._hashes[path]}")
        return prompt, hashes

    def _use_loras(self, req: Request, loras: LoraPlan) -> list[str]:
        """The chooser's LoRA and the prompt's attached and merged at their weights (a tag naming
        the chooser's sets its weight); notes for the prompt's that could not load."""
        extras = {p: loras.names[p] for p in loras.weights if p != self.lora_path}
        notes = self._use_extras(extras)
        scales = {name: loras.weights[path] for path, (name, _) in self._extras.items()}
        if self.lora_name is not None:
            scales[ADAPTER] = loras.weights.get(self.lora_path, req.lora_scale)
        self.merge_loras(scales)
        return notes
