"""CLIP's tokenizers for the tiny models, built offline: the real BPE one and a byte-level one.

The tiny SD and tiny CLIP get CLIP's real BPE vocabulary (the merges that OpenAI published, as
shipped inside the `open-clip-torch` wheel), so prompt chunking, truncation and added embedding
tokens behave in tests exactly as with Anything V5 or openai/clip-vit-large-patch14. The file is
located through the package metadata, never by importing open_clip (whose dependencies pull a
torchvision that does not load with the CPU torch).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from kshd.config.errors import UserError

BPE_PACKAGE = "open-clip-torch"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
INSTALL_HINT = f"pip install --no-deps {BPE_PACKAGE}==3.3.0"
# As open_clip's SimpleTokenizer: the merges after the header line, as many as fit CLIP's
# 49,408-entry vocabulary next to the 512 byte symbols (with and without `</w>`) and the two
# special tokens: lines 1..49152-256-2 of the file.
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def bpe_merges_file() -> Path:
    """CLIP's merges inside the installed open-clip-torch wheel; one line on how to get it."""
    try:
        found = [f for f in importlib.metadata.files(BPE_PACKAGE) or [] if f.name == BPE_FILE]
        path = Path(found[0].locate()) if found else None
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("open_clip")  # an install without metadata
        path = Path(spec.origin).parent / BPE_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UserError(
            f"the tiny models need CLIP's BPE merges ({BPE_FILE}) from the {BPE_PACKAGE} "
            f"wheel, which is not installed: run `make setup` or `{INSTALL_HINT}`"
        )
    return path


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary in id order and its merges, as open_clip's SimpleTokenizer builds them."""
    lines = gzip.decompress(bpe_merges_file().read_bytes()).decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : N_MERGES + 1])
    chars = list(bytes_to_unicode().values())
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), START, END]
    return tuple(vocab), merges


def write_clip_bpe_files(out_dir: Path) -> None:
    """`vocab.json` and `merges.txt` exactly as CLIP's (and SD 1.x's tokenizer folder)."""
    vocab, merges = _clip_vocab_and_merges()
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_json = json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False)
    (out_dir / "vocab.json").write_text(vocab_json, encoding="utf-8")
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out_dir / "merges.txt").write_text(merges_txt, encoding="utf-8")


def clip_bpe_tokenizer():
    """CLIP's real BPE tokenizer (49,408 tokens, 77 positions), built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges))
    tok.model_max_length = MAX_LENGTH  # without it, padding to max_length breaks
    return tok


def byte_level_clip_tokenizer():
    """A byte-level CLIPTokenizer with no merges: one token per byte, for tests that need that."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [START, END]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tok.model_max_length = MAX_LENGTH
    return tok
