"""The LoRAs the studio offers: the trained one, the training's checkpoints (the one the
evaluation chose marked "best"), each with its EMA where the training kept one, and every
`.safetensors` in the configured LoRA folders."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from kshd.adapters.files import ema_folder
from kshd.adapters.weights import adapter_identity
from kshd.training.checkpoints import EMA_TENSORS, TENSORS, complete_checkpoints

log = logging.getLogger(__name__)
NONE = ""  # the chooser's value for "no LoRA"


@dataclass(frozen=True)
class LoraCatalog:
    """Where LoRAs are found (conf/'s `generate.lora`, `output.*`, `generate.gui.lora_dirs`)."""

    trained: str | None  # the trained LoRA folder (models/lora)
    checkpoints_dir: str | None  # models/checkpoints: checkpoint-<step>/lora.safetensors
    eval_metrics: str | None  # reports/metrics.json: its best_checkpoint is marked
    lora_dirs: tuple[str, ...] = ()  # folders of .safetensors LoRAs (A1111's models/Lora)

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) for a dropdown, "None" first; value = the path to load."""
        out = [("None (the base model alone)", NONE)]
        if self.trained and Path(self.trained).exists():
            out.append((f"{Path(self.trained).name} (trained)", str(self.trained)))
            if ema := ema_folder(self.trained):  # drawn as the trained folder is: its pair
                out.append((f"{Path(self.trained).name} EMA (trained)", str(ema)))
        best = self._best()
        found = complete_checkpoints(Path(self.checkpoints_dir)) if self.checkpoints_dir else []
        for step, path in found:
            for file, label in ((TENSORS, ""), (EMA_TENSORS, " EMA")):
                if (path / file).is_file():
                    mark = " (best)" if best == (step, bool(label)) else ""
                    value = path if file == TENSORS else path / file
                    out.append((f"checkpoint {step}{label}{mark}", str(value)))
        for folder in self.lora_dirs:
            for file in sorted(Path(folder).glob("**/*.safetensors")):
                out.append((file.stem, str(file)))
        return out

    def by_name(self) -> dict[str, str]:
        """{A1111 name: path} of every LoRA offered (a file's stem, a checkpoint's folder name,
        `_ema` added for an EMA's): what `<lora:name:w>` in a prompt finds; the first of a name
        wins."""
        out: dict[str, str] = {}
        for _, value in self.choices()[1:]:
            try:
                out.setdefault(adapter_identity(value)[0], value)
            except FileNotFoundError:
                continue
        return out

    def roots(self) -> str:
        """Where it looks, for a message."""
        places = [self.trained, self.checkpoints_dir, *self.lora_dirs]
        return ", ".join(str(p) for p in places if p) or "no LoRA folders configured"

    def _best(self) -> tuple[int, bool] | None:
        """(step, whether its EMA) of the evaluation's best checkpoint."""
        if not self.eval_metrics or not Path(self.eval_metrics).is_file():
            return None
        path = Path(self.eval_metrics)
        try:
            best = json.loads(path.read_text(encoding="utf-8")).get("best_checkpoint") or {}
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s): no checkpoint marked best", path, exc)
            return None
        return (best["step"], bool(best.get("ema"))) if "step" in best else None
