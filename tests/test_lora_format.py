"""The kohya LoRA file has the same bytes whichever process writes it (DVC hashes it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

WRITE = """
import sys, torch
from pathlib import Path
from kshd.lora import save_kohya
state = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight":
         torch.ones(4, 32), "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
         ".lora_B.weight": torch.full((32, 4), 0.5)}
meta = {f"ss_key_{i}": f"value {i}" for i in range(30)} | {"ss_network_dim": 4}
sys.stdout.write(str(save_kohya(state, Path(sys.argv[1]), 4.0, meta)))
"""


def test_kohya_file_is_byte_identical_across_processes(tmp_path):
    files = []
    for i in range(3):
        out = tmp_path / str(i)
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", WRITE, str(out)], capture_output=True, text=True, check=True
        )
        files.append(Path(proc.stdout).read_bytes())
    assert files[0] == files[1] == files[2]
    path = tmp_path / "0" / "ksh_drawing_style.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert meta["ss_key_7"] == "value 7" and meta["ss_network_dim"] == "4"
        names = list(f.keys())  # noqa: SIM118 (a safe_open handle is not a dict)
    assert any(k.endswith(".alpha") for k in names)
