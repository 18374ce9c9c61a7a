"""LoCon: LoRA on the transformer blocks' linear layers and the ResNet convs, trained, saved and
drawn by LoRA's code; its kohya file says so as kohya does (`conv_dim` / `conv_alpha`)."""

from __future__ import annotations

from kshd.adapters.lora import LoraAdapter


class LoconAdapter(LoraAdapter):
    """kohya's `networks.lora` with conv layers: the convs' rank and alpha in `ss_network_args`
    (here `train.rank` / `train.alpha`, as for the linear layers)."""

    kind = "locon"

    def network_metadata(self) -> dict[str, object]:
        # kohya's train_network.py records `--network_args` as given: strings
        args = {"conv_dim": str(self.rank), "conv_alpha": str(self.alpha)}
        return super().network_metadata() | {"ss_network_args": args}
