"""SDXL prompts with AUTOMATIC1111's syntax (prompts.encoding): the same chunks and weights through
both text encoders, as A1111's SDXL conditioner reads them.

Each 75-token chunk goes through both CLIPs; each encoder's penultimate hidden states get the
tokens' weights (mean restored) on their own, then sit side by side (768 + 1280 wide for SDXL);
the pooled `text_embeds` is the second encoder's projection of the first chunk. The app, the
evaluation and the training's validation images draw an SDXL base through this, and hand the
pipelines `pipe_embeds`. The penultimate layers always: `model.clip_skip` is SD 1.x's alone
(A1111 ignores its Clip skip for SDXL; `clip_skip_note` says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kshd.prompts.encoding import Chunk, PromptEncoder, chunk_input_ids, weighted


@dataclass(frozen=True)
class XLEmbeds:
    hidden: torch.Tensor  # [1, 77 * chunks, width 1 + width 2]
    pooled: torch.Tensor  # [1, projection]


def clip_skip_note(sdxl: bool, clip_skip: int | None, key: str = "model.clip_skip") -> str | None:
    """What to say when a clip skip other than 1 is asked of an SDXL base (None: nothing)."""
    if not sdxl or clip_skip in (None, 1):
        return None
    return (
        f"{key}={clip_skip} is not applied to an SDXL base: SDXL is always conditioned on its "
        "text encoders' penultimate layers (its pipelines, kohya and A1111 do so)"
    )


class PromptEncoderXL(PromptEncoder):
    """PromptEncoder for SDXL: `encode` and `encode_pair` give XLEmbeds (the penultimate layers
    whatever the clip skip)."""

    def __init__(self, tokenizers, text_encoders, vectors: dict[str, int] | None = None):
        super().__init__(tokenizers[0], text_encoders[0], vectors)
        self.tokenizer_2, self.text_encoder_2 = tokenizers[1], text_encoders[1]

    def _encode_both(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.text_encoder.device
        ids = [
            torch.tensor([chunk_input_ids(t, chunk)], device=device)
            for t in (self.tokenizer, self.tokenizer_2)
        ]
        first = self.text_encoder(ids[0], output_hidden_states=True)
        second = self.text_encoder_2(ids[1], output_hidden_states=True)
        states = [weighted(o.hidden_states[-2], chunk) for o in (first, second)]
        return torch.cat(states, dim=-1), second.text_embeds

    @torch.no_grad()
    def _encode_chunks(self, chunks: list[Chunk], min_chunks: int, clip_skip: int) -> XLEmbeds:
        chunks = chunks + [Chunk() for _ in range(min_chunks - len(chunks))]
        parts = [self._encode_both(c) for c in chunks]
        return XLEmbeds(torch.cat([hidden for hidden, _ in parts], dim=1), parts[0][1])


def prompt_encoder(
    pipe, vectors: dict[str, int] | None = None, clip_skip: int = 1
) -> PromptEncoder:
    """The pipeline's family's encoder: SDXL's (a second text encoder) or SD 1.x's at
    `clip_skip` (`model.clip_skip`)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return PromptEncoderXL(
            [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], vectors
        )
    return PromptEncoder(pipe.tokenizer, pipe.text_encoder, vectors, clip_skip)


def pipe_embeds(pos, neg, n: int) -> dict[str, torch.Tensor]:
    """A prompt pair as a pipeline's arguments for n images (SDXL's pooled ones too)."""
    if isinstance(pos, torch.Tensor):
        return {"prompt_embeds": pos.repeat(n, 1, 1), "negative_prompt_embeds": neg.repeat(n, 1, 1)}
    return {
        "prompt_embeds": pos.hidden.repeat(n, 1, 1),
        "negative_prompt_embeds": neg.hidden.repeat(n, 1, 1),
        "pooled_prompt_embeds": pos.pooled.repeat(n, 1),
        "negative_pooled_prompt_embeds": neg.pooled.repeat(n, 1),
    }
