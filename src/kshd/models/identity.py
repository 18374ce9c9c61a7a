"""A model's identity for cache and resume keys, and the hashes A1111 and kohya record."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

# A local model folder's identity reads each small file whole and, of each larger one (the
# weights), its size, its first MiB (a safetensors header: tensor names, shapes, offsets) and
# SAMPLE_WINDOWS slices spread over the rest: ~2 MiB per file however large.
WHOLE_FILE_LIMIT = 1 << 20


SAMPLE_WINDOWS = 16


WINDOW = 64 << 10


def embeddings_identity(embeddings: Mapping[str, str]) -> dict[str, str]:
    """{name: sha256 of its file} of the loaded embeddings: images drawn with one depend on
    its vectors (A1111 hashes them the same way)."""
    return {
        name: hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]
        for name, file in sorted(embeddings.items())
    }


def model_identity(pretrained: str, revision: str | None) -> dict:
    """A hub id and revision, or a local folder's (or single file's) content digest: the same
    model copied or moved elsewhere keeps its identity (a checkpoint resumes), a changed file
    changes it."""
    folder = Path(pretrained).expanduser()
    if folder.is_file():
        return {"content": hashlib.sha256(_file_fingerprint(folder)).hexdigest(), "files": 1}
    if not folder.is_dir():
        return {"id": pretrained, "revision": revision}
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        digest.update(_file_fingerprint(path))
    return {"content": digest.hexdigest(), "files": len(files)}


def file_sha256(path: Path) -> str:
    """A single file's whole sha256 (kohya's `ss_new_sd_model_hash`; seconds for 7 GB)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def a1111_hash(path: Path) -> str:
    """A single file's "Model hash" as A1111 writes it and Civitai looks it up: the first 10 hex
    digits of its sha256."""
    return file_sha256(path)[:10]


def _file_fingerprint(path: Path) -> bytes:
    """A small file's bytes' hash; a large one's size, first MiB and evenly spread windows."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode("ascii") + b"\0")
    with path.open("rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            h.update(f.read())
            return h.digest()
        h.update(f.read(WHOLE_FILE_LIMIT))
        span = size - WHOLE_FILE_LIMIT - WINDOW
        for i in range(SAMPLE_WINDOWS + 1):  # the last window ends at the file's end
            f.seek(WHOLE_FILE_LIMIT + span * i // SAMPLE_WINDOWS)
            h.update(f.read(WINDOW))
    return h.digest()
