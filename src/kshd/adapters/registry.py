"""The adapter kinds by name (`train.adapter.kind`), and which kind reads a given file."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from kshd.adapters.base import Adapter
from kshd.adapters.dora import DoraAdapter
from kshd.adapters.locon import LoconAdapter
from kshd.adapters.loha import LohaAdapter
from kshd.adapters.lokr import LokrAdapter
from kshd.adapters.lora import LoraAdapter
from kshd.config.schema_adapters import AdapterSettings

DEFAULT_KIND = "lora"  # reads every file no other kind claims (diffusers' loader knows many)
_KINDS: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Adds a kind (a class decorator; its settings class registers with the config filler)."""
    _KINDS[cls.kind] = cls
    return cls


# LoHa and LoKr before DoRA: a LyCORIS LoHa or LoKr trained with dora_wd has `.dora_scale` too
for _cls in (LoraAdapter, LoconAdapter, LohaAdapter, LokrAdapter, DoraAdapter):
    register(_cls)


def adapter_class(kind: str) -> type[Adapter]:
    if kind not in _KINDS:
        raise ValueError(
            f"no adapter of kind {kind!r}: expected one of {', '.join(sorted(_KINDS))}"
        )
    return _KINDS[kind]


def build_adapter(settings: AdapterSettings, rank: int, alpha: float) -> Adapter:
    """The configured adapter of `train.adapter` (its kind) at `train.rank` / `train.alpha`."""
    return adapter_class(settings.kind)(settings, rank, alpha)


def claiming(keys: Collection[str], metadata: Mapping[str, str]) -> type[Adapter]:
    """The kind that reads a file with these tensor names and metadata."""
    for kind, cls in _KINDS.items():
        if kind != DEFAULT_KIND and cls.claims(keys, metadata):
            return cls
    return _KINDS[DEFAULT_KIND]
