"""What the studio's model bar may load when it listens beyond loopback: the configured bases
(model.pretrained, generate.gui.models, by their exact names, Hub ids included) and LoRAs inside
the configured folders (generate.lora's, generate.gui.checkpoints_dir, generate.gui.lora_dirs).
Anything else, whether it exists or not, gets one message, so the file system cannot be probed
through `/set_model`. On loopback any path or Hub id may be typed, as before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kshd.config.errors import UserError


class NotConfigured(UserError):
    """A base or LoRA outside what the studio was configured to serve."""


def _resolved(path: str) -> Path:
    return Path(path).expanduser().resolve()


@dataclass(frozen=True)
class Roots:
    """`bases`: the loadable base models as named; `lora_folders`: where LoRAs may be."""

    bases: tuple[str, ...]
    lora_folders: tuple[str, ...]

    def check_base(self, base: str) -> None:
        if base in self.bases or str(_resolved(base)) in {str(_resolved(b)) for b in self.bases}:
            return
        raise NotConfigured(
            f"{base} is not a configured base model: on a host other than loopback the studio "
            "loads only model.pretrained and generate.gui.models"
        )

    def check_lora(self, lora: str) -> None:
        path = _resolved(lora)
        if any(path.is_relative_to(_resolved(folder)) for folder in self.lora_folders):
            return
        raise NotConfigured(
            f"{lora} is not in a configured LoRA folder: on a host other than loopback the "
            "studio loads LoRAs only from generate.lora, generate.gui.checkpoints_dir and "
            "generate.gui.lora_dirs"
        )
