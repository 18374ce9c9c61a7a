"""AUTOMATIC1111 prompt syntax: attention weights, and prompts longer than CLIP's 77 tokens.

The original project's prompts are written for A1111: `(drawn by KSH drawing style : 1.5)` and a
negative prompt of well over 77 tokens. diffusers truncates at 77 and reads the brackets as text,
and compel parses only its own `(text)1.5`, so the syntax is parsed here with A1111's semantics:

- `(text)` x1.1, `[text]` /1.1, `(text:1.5)` x1.5, nested multiply; `\\(` `\\)` `\\[` `\\]` are
  literal brackets; an unclosed bracket applies to the end, an unmatched closing one is text;
- `BREAK` starts a new 75-token chunk;
- the prompt is cut into chunks of 75 tokens (at the last comma when it is within 20 tokens of
  the end), each encoded as its own 77-token CLIP input, and the results are concatenated;
- weights scale each token's embedding, then the chunk is rescaled to its unweighted mean;
- with clip skip 2 (`model.clip_skip`) each chunk is the text encoder's penultimate layer
  through its final layer norm, as A1111 and kohya take it (`clip_hidden`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from kshd.config.values import MAX_TOKEN_LENGTHS

Piece = tuple[str, float]
BREAK_WEIGHT = -1.0  # a BREAK marker in a parsed prompt
CHUNK = 75  # tokens per chunk between CLIP's start and end tokens
COMMA_BACKTRACK = 20  # break a full chunk at a comma this close to its end

_ATTENTION = re.compile(
    r"""
    \\[()\[\]\\]                        # an escaped bracket or backslash
    | \( | \[                           # openers
    | :\s*([+-]?[.\d]+)\s*\)            # (text:1.5) closes with an explicit weight
    | \) | ]                            # closers
    | [^\\()\[\]:]+                     # plain text
    | : | \\                            # a lone colon or backslash is text
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
ROUND, SQUARE = 1.1, 1 / 1.1


def join_prefix(prefix: str, text: str) -> str:
    """`prefix, text`: a comma between them unless the prefix ends with one."""
    prefix, text = prefix.strip(), text.strip()
    if not prefix or not text:
        return prefix or text
    return f"{prefix} {text}" if prefix.endswith(",") else f"{prefix}, {text}"


def parse_weights(text: str) -> list[Piece]:
    """Split a prompt into (text, weight) pieces; BREAK becomes ("BREAK", BREAK_WEIGHT)."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if len(token) == 2 and token.startswith("\\"):
            pieces.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open and _is_number(weight):
            scale_from(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale_from(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            scale_from(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    pieces.append(["BREAK", BREAK_WEIGHT])
                pieces.append([part, 1.0])
    for start in round_open:
        scale_from(start, ROUND)
    for start in square_open:
        scale_from(start, SQUARE)
    return _merge(pieces)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merge(pieces: list[list]) -> list[Piece]:
    """Join neighbours of equal weight; drop empty text (an empty prompt is one empty piece)."""
    merged: list[list] = []
    for text, weight in pieces:
        if not text and weight != BREAK_WEIGHT:
            continue
        if merged and merged[-1][1] == weight and weight != BREAK_WEIGHT:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(t, w) for t, w in merged] or [("", 1.0)]


@dataclass
class Chunk:
    """Up to CHUNK tokens with their weights (start and end tokens are added when encoding)."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def chunk_tokens(
    pieces: Sequence[Piece], tokenize: Callable[[str], list[int]], comma_id: int | None
) -> list[Chunk]:
    """Cut weighted tokens into chunks of CHUNK, at a comma near the end when there is one."""
    stream = (
        (token, weight)
        for text, weight in pieces
        for token in ([None] if weight == BREAK_WEIGHT else tokenize(text))
    )
    return chunk_stream(stream, comma_id)


def chunk_stream(stream: Iterable[tuple[int | None, float]], comma_id: int | None) -> list[Chunk]:
    """The chunking itself, over (token, weight) pairs; a None token is a BREAK."""
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for token, weight in stream:
        if token is None:
            close()
            continue
        if len(current.ids) == CHUNK:
            if last_comma >= 0 and CHUNK - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                rest = Chunk(current.ids[cut:], current.weights[cut:])
                del current.ids[cut:], current.weights[cut:]
                close()
                current = rest
            else:
                close()
        if token == comma_id:
            last_comma = len(current.ids)
        current.ids.append(token)
        current.weights.append(weight)
    if current.ids or not chunks:
        close()
    return chunks


def comma_token(tokenizer) -> int | None:
    comma = tokenizer(",", add_special_tokens=False).input_ids
    return comma[0] if len(comma) == 1 else None


def chunk_input_ids(tokenizer, chunk: Chunk) -> list[int]:
    """One CLIP input as A1111 builds it: start token, the chunk, end token, padding to 77."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id, *chunk.ids, tokenizer.eos_token_id]
    return ids + [pad] * (CHUNK + 2 - len(ids))


def clip_hidden(text_encoder, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """An SD 1.x text encoder's output for [n, 77] ids at A1111's and kohya's `clip_skip`: 1
    the last layer's (the final layer norm's output), 2 the penultimate layer's hidden state
    through that same final layer norm (`hidden_states[-clip_skip]`, kohya's get_hidden_states).
    diffusers' pipelines count the layers skipped: their `clip_skip=1` is this 2."""
    if clip_skip == 1:
        return text_encoder(ids)[0]
    states = text_encoder(ids, output_hidden_states=True).hidden_states
    return final_layer_norm(text_encoder)(states[-clip_skip])


def final_layer_norm(text_encoder) -> torch.nn.Module:
    """A CLIP text encoder's final layer norm: `text_model.final_layer_norm` up to transformers
    4 (and in CLIPTextModelWithProjection), the model's own since transformers 5 flattened
    CLIPTextModel (diffusers' and kohya's `text_model.final_layer_norm` fail there)."""
    model = getattr(text_encoder, "module", text_encoder)  # a DDP-wrapped encoder (training)
    return getattr(model, "text_model", model).final_layer_norm


def encode_chunk_ids(text_encoder, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """[batch, chunks, 77] ids -> [batch, 77 * chunks, width]: each chunk through CLIP alone
    (at `clip_skip`), the outputs concatenated (A1111's and kohya's long prompts; the UNet takes
    any length)."""
    b, k, n = ids.shape
    hidden = clip_hidden(text_encoder, ids.reshape(b * k, n), clip_skip)
    return hidden.reshape(b, k * n, hidden.shape[-1])


def encode_chunk_ids_sdxl(
    text_encoder, text_encoder_2, ids: torch.Tensor, ids_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's text conditioning, as its pipeline and kohya build it, per 77-token chunk: both
    encoders' penultimate hidden states side by side ([batch, 77 * chunks, 768 + 1280]) and the
    second's pooled projection of the first chunk ([batch, 1280]: the UNet's `text_embeds`)."""
    b, k, n = ids.shape
    first = text_encoder(ids.reshape(b * k, n), output_hidden_states=True)
    second = text_encoder_2(ids_2.reshape(b * k, n), output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    pooled = second.text_embeds.reshape(b, k, -1)[:, 0]
    return hidden.reshape(b, k * n, hidden.shape[-1]), pooled


def weighted(z: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """A chunk's CLIP output [1, 77, width] with its tokens' weights applied, A1111's way."""
    weights = [1.0, *chunk.weights] + [1.0] * (CHUNK + 1 - len(chunk.weights))
    if all(w == 1.0 for w in weights):
        return z
    mean = z.mean()
    z = z * torch.tensor(weights, device=z.device, dtype=z.dtype)[None, :, None]
    new_mean = z.mean()
    # A1111 restores the mean; a mean near zero (e.g. an untrained layer norm) has no scale
    if min(mean.abs(), new_mean.abs()) > 1e-3 * z.abs().mean():
        z = z * (mean / new_mean)
    return z


class PromptEncoder:
    """CLIP embeddings of A1111-syntax prompts of any length: [1, 77 * chunks, width], at
    `clip_skip` (the base's `model.clip_skip`; a request may ask for another)."""

    def __init__(
        self, tokenizer, text_encoder, vectors: dict[str, int] | None = None, clip_skip: int = 1
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vectors = dict(vectors or {})  # textual-inversion name -> number of vectors
        self.comma_id = comma_token(tokenizer)
        self.clip_skip = clip_skip

    def _tokenize(self, text: str) -> list[int]:
        # verbose=False: a long prompt is chunked here, the tokenizer need not warn about it
        return self.tokenizer(self.expand(text), add_special_tokens=False, verbose=False).input_ids

    def expand(self, text: str) -> str:
        """A multi-vector embedding's name becomes its tokens `name name_1 ...`."""
        for name, count in self.vectors.items():
            if count > 1:
                tokens = " ".join([name] + [f"{name}_{i}" for i in range(1, count)])
                text = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", tokens, text)
        return text

    def chunks(self, prompt: str) -> list[Chunk]:
        return chunk_tokens(parse_weights(prompt), self._tokenize, self.comma_id)

    def _encode_chunk(self, chunk: Chunk, clip_skip: int) -> torch.Tensor:
        ids = torch.tensor(
            [chunk_input_ids(self.tokenizer, chunk)], device=self.text_encoder.device
        )
        return weighted(clip_hidden(self.text_encoder, ids, clip_skip), chunk)

    @torch.no_grad()
    def _encode_chunks(self, chunks: list[Chunk], min_chunks: int, clip_skip: int) -> torch.Tensor:
        chunks = chunks + [Chunk() for _ in range(min_chunks - len(chunks))]
        return torch.cat([self._encode_chunk(c, clip_skip) for c in chunks], dim=1)

    def encode(self, prompt: str, min_chunks: int = 1, clip_skip: int | None = None):
        """`clip_skip`: None = this encoder's."""
        return self._encode_chunks(self.chunks(prompt), min_chunks, clip_skip or self.clip_skip)

    def encode_pair(self, prompt: str, negative: str, clip_skip: int | None = None) -> tuple:
        """Both prompts padded with empty chunks to the same length (classifier-free guidance);
        `clip_skip`: None = this encoder's."""
        pos, neg = self.chunks(prompt), self.chunks(negative)
        n, skip = max(len(pos), len(neg)), clip_skip or self.clip_skip
        return self._encode_chunks(pos, n, skip), self._encode_chunks(neg, n, skip)


@dataclass(frozen=True)
class FittedCaption:
    ids: torch.Tensor  # [chunks, 77]: the CLIP inputs, always max_token_length / 75 of them
    tokens: int  # the caption's tokens
    cut: int  # tokens left out (0 when it fits)


class CaptionChunker:
    """Training captions in the app's 75-token chunks (kohya's max_token_length), as CLIP inputs.

    Captions are literal text (kohya's default: no attention weights) and always take
    max_token_length / 75 chunks, so a batch stacks. A longer caption loses the end of its body,
    never the trigger phrase: that is the part the LoRA is asked to learn.
    """

    def __init__(self, tokenizer, max_token_length: int = 75, keep: str = ""):
        if max_token_length not in MAX_TOKEN_LENGTHS:
            raise ValueError(f"max_token_length must be one of {MAX_TOKEN_LENGTHS}")
        self.tokenizer, self.keep = tokenizer, keep.strip()
        self.max_chunks = max_token_length // CHUNK
        self.comma_id = comma_token(tokenizer)

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids

    def _chunks(self, ids: list[int]) -> list[Chunk]:
        return chunk_stream(((t, 1.0) for t in ids), self.comma_id)

    def _body_and_tail(self, text: str) -> tuple[list[int], list[int]]:
        """The caption without its trigger phrase, and the trigger as it ends the caption."""
        parts = [p.strip() for p in text.split(",")]
        if self.keep in parts:
            body = ", ".join(p for p in parts if p and p != self.keep)
        else:
            i = text.rfind(self.keep)
            body = (text[:i] + text[i + len(self.keep) :]).strip(" ,")
        tail = f", {self.keep}" if body else self.keep
        return self._tokenize(body), self._tokenize(tail)

    def fit(self, text: str) -> tuple[list[Chunk], int, int]:
        """(chunks, tokens, tokens cut): the body before the trigger phrase is what is cut."""
        ids = self._tokenize(text)
        chunks = self._chunks(ids)
        if len(chunks) <= self.max_chunks:
            return chunks, len(ids), 0
        if not self.keep or self.keep not in text or text.lstrip().startswith(self.keep):
            kept = chunks[: self.max_chunks]  # the trigger (if any) is at the start: kept
            return kept, len(ids), len(ids) - sum(len(c.ids) for c in kept)
        body, tail = self._body_and_tail(text)
        n = max(0, self.max_chunks * CHUNK - len(tail))
        while n > 0 and len(self._chunks(body[:n] + tail)) > self.max_chunks:
            n -= 1  # the comma back-off may push a few tokens into the next chunk
        kept = self._chunks(body[:n] + tail)[: self.max_chunks]
        return kept, len(ids), len(ids) - sum(len(c.ids) for c in kept)

    def __call__(self, text: str) -> FittedCaption:
        chunks, tokens, cut = self.fit(text)
        chunks += [Chunk() for _ in range(self.max_chunks - len(chunks))]
        ids = torch.tensor([chunk_input_ids(self.tokenizer, c) for c in chunks])
        return FittedCaption(ids, tokens, cut)
