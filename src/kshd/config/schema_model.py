"""The `model` config group's schema: the base model and what it predicts (conf/model/)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kshd.config.fill import changes, require
from kshd.config.values import CLIP_SKIPS, PREDICTION_TYPES


@dataclass(frozen=True)
class ModelSettings:
    """`model`: the base model, SD 1.x or SDXL (read from the model), a hub id, a local folder
    or one .safetensors file (trained on, evaluated), and what it predicts (conf/model/ presets
    say it for each base; a single file cannot)."""

    pretrained: str = field(metadata=changes("train", "evaluate"))
    revision: str | None = field(metadata=changes("train", "evaluate"))
    variant: str | None = field(metadata=changes("train", "evaluate"))
    single_file_config: str | None = field(metadata=changes("train", "evaluate"))
    prediction_type: str | None = field(metadata=changes("train", "evaluate"))
    zero_terminal_snr: bool = field(metadata=changes("train", "evaluate"))
    no_half_vae: bool = field(metadata=changes("train", "evaluate"))
    # the text encoder's layer the UNet is conditioned on, A1111's "Clip skip" (SD 1.x only)
    clip_skip: int = field(metadata=changes("train", "evaluate"))

    def validate(self) -> None:
        require(
            self.prediction_type in PREDICTION_TYPES,
            "model.prediction_type",
            self.prediction_type,
            "null (the scheduler config's), epsilon or v_prediction",
        )
        require(
            not self.zero_terminal_snr or self.prediction_type == "v_prediction",
            "model.zero_terminal_snr",
            self.zero_terminal_snr,
            "false, or true with model.prediction_type=v_prediction (at zero terminal SNR an "
            "epsilon model has nothing to predict from)",
        )
        require(
            self.clip_skip in CLIP_SKIPS and not isinstance(self.clip_skip, bool),
            "model.clip_skip",
            self.clip_skip,
            "1 (the text encoder's last layer) or 2 (its penultimate, A1111's and kohya's "
            "Clip skip 2: Anything V5 and the NAI-lineage anime models)",
        )

    def schedule_identity(self) -> dict:
        """What these settings change in the noise schedule, for cache and resume keys; nothing
        for a plain base, so keys made before these settings existed still match."""
        if not (self.prediction_type or self.zero_terminal_snr):
            return {}
        return {
            "prediction_type": self.prediction_type,
            "zero_terminal_snr": self.zero_terminal_snr,
        }

    def encoding_identity(self) -> dict:
        """What these settings change in the prompts' encoding and the noise schedule, for
        cache and resume keys; nothing for a plain base at clip skip 1, so keys made before
        these settings existed still match."""
        return self.schedule_identity() | (
            {"clip_skip": self.clip_skip} if self.clip_skip != 1 else {}
        )
