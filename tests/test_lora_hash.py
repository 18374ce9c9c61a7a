"""`Lora hashes` as AUTOMATIC1111 computes them, so civitai links a drawing to its LoRA."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import save_file

from kshd.drawing.pnginfo import lora_hash

# sha256 of eight zero bytes: the data section of a file holding one fp32 tensor [0, 0].
EIGHT_ZEROS = "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"


def test_hash_is_a1111_addnet_hash_of_the_tensor_bytes(tmp_path):
    plain, tagged = tmp_path / "plain.safetensors", tmp_path / "tagged.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    save_file({"w": torch.zeros(2)}, str(tagged), metadata={"ss_output_name": "ksh"})
    assert hashlib.sha256(bytes(8)).hexdigest() == EIGHT_ZEROS
    assert lora_hash(plain) == lora_hash(tagged) == EIGHT_ZEROS[:12]  # the header is skipped
    full = hashlib.sha256(plain.read_bytes()).hexdigest()
    assert not full.startswith(lora_hash(plain))  # not the whole file's (civitai's AutoV2) hash
