"""A1111 prompt syntax: weights, nesting, escapes, BREAK, and prompts longer than 77 tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from kshd.prompts.encoding import BREAK_WEIGHT, CHUNK, PromptEncoder, chunk_tokens, parse_weights


def _approx(pieces):
    return [(t, round(w, 6)) for t, w in pieces]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("a [quiet] word", [("a ", 1.0), ("quiet", 0.909091), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("unmatched) and ]", [("unmatched) and ]", 1.0)]),
        (r"\(literal\] and \\", [("(literal] and \\", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("(drawn by KSH drawing style : 1.5), ", [("drawn by KSH drawing style ", 1.5), (", ", 1)]),
        ("((nested):2)", [("nested", 2.2)]),
        ("[(x:1.5)]", [("x", 1.363636)]),
        ("(16:9 ratio)", [("16:9 ratio", 1.1)]),
        ("(ratio 16:9)", [("ratio 16", 9.0)]),  # as in A1111: a trailing number is a weight
        ("(a:1.2.3)", [("a:1.2.3)", 1.1)]),
        ("(worst quality, low quality:1.4)", [("worst quality, low quality", 1.4)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
        ("", [("", 1.0)]),
    ],
)
def test_parse_weights(prompt, expected):
    assert _approx(parse_weights(prompt)) == _approx(expected)


def test_break_splits_pieces():
    assert parse_weights("a girl BREAK (park:1.2)") == [
        ("a girl", 1.0),
        ("BREAK", BREAK_WEIGHT),
        ("park", 1.2),
    ]


def _by_word(text: str) -> list[int]:
    """A tokenizer with one token per word and 0 for a comma, to check chunk cutting."""
    return [0 if w == "," else len(w) for w in text.replace(",", " , ").split()]


def test_chunks_cut_at_75_and_at_a_late_comma():
    # 80 plain words: 75 in the first chunk, 5 in the second
    chunks = chunk_tokens([("w " * 80, 1.0)], _by_word, comma_id=0)
    assert [len(c.ids) for c in chunks] == [CHUNK, 5]
    # a comma at position 60 (15 from the end): the first chunk ends after it
    text = "w " * 60 + ", " + "w " * 30
    chunks = chunk_tokens([(text, 1.0)], _by_word, comma_id=0)
    assert [len(c.ids) for c in chunks] == [61, 30] and chunks[0].ids[-1] == 0
    # a comma too early (position 10) is not used
    text = "w " * 10 + ", " + "w " * 80
    assert [len(c.ids) for c in chunk_tokens([(text, 1.0)], _by_word, 0)] == [CHUNK, 16]
    # BREAK closes a chunk; weights follow their tokens
    chunks = chunk_tokens([("a b", 1.0), ("BREAK", BREAK_WEIGHT), ("c", 1.5)], _by_word, 0)
    assert [c.weights for c in chunks] == [[1.0, 1.0], [1.5]]
    assert len(chunk_tokens([("", 1.0)], _by_word, 0)) == 1


@pytest.fixture(scope="module")
def encoder(tiny_models):
    path = tiny_models["sd"]
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").eval()
    return PromptEncoder(tok, te)


def _words(n: int) -> list[str]:
    return [f"w{i % 10}" for i in range(n)]


def test_plain_short_prompt_equals_diffusers_encoding(encoder, tiny_models):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["sd"], safety_checker=None)
    prompt = "an anime girl, blonde hair"
    ours = encoder.encode(prompt)
    theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    assert ours.shape == (1, 77, theirs.shape[-1])
    assert torch.equal(ours, theirs)


def test_long_prompt_is_chunked_not_truncated(encoder):
    """Changing a token past the 77th changes the embedding (diffusers would cut it off)."""
    words = _words(200)
    n_tokens = len(encoder._tokenize(" ".join(words)))
    assert n_tokens > 2 * CHUNK
    base = encoder.encode(" ".join(words))
    assert base.shape[1] == 77 * len(encoder.chunks(" ".join(words))) >= 77 * 3
    changed = list(words)
    changed[-1] = "zz"
    assert not torch.equal(encoder.encode(" ".join(changed)), base)
    # and the first chunk is untouched by a change at the end
    assert torch.equal(encoder.encode(" ".join(changed))[:, :77], base[:, :77])


class _Lookup(torch.nn.Module):
    """A text encoder stand-in whose output has a clear non-zero mean."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, 4)
        torch.nn.init.uniform_(self.table.weight, 0.5, 1.5)

    @property
    def device(self):
        return self.table.weight.device

    def forward(self, ids):
        return (self.table(ids),)


def test_weights_scale_tokens_and_keep_the_mean(encoder):
    plain = encoder.encode("red hair, park")
    weighted = encoder.encode("(red hair:1.5), park")
    assert plain.shape == weighted.shape and not torch.equal(plain, weighted)
    # escaped brackets are text, not weights
    assert not torch.equal(encoder.encode(r"\(red hair\), park"), weighted)
    lookup = PromptEncoder(encoder.tokenizer, _Lookup(len(encoder.tokenizer)))
    plain, weighted = lookup.encode("red, park"), lookup.encode("(red:2), park")
    n_red = len(lookup._tokenize("red"))
    assert torch.allclose(plain.mean(), weighted.mean(), atol=1e-6)  # A1111 restores the mean
    ratio = weighted[0, 1 : 1 + n_red] / plain[0, 1 : 1 + n_red]
    rest = weighted[0, 1 + n_red :] / plain[0, 1 + n_red :]
    assert torch.allclose(ratio, ratio.flatten()[0]) and torch.allclose(rest, rest.flatten()[0])
    assert torch.allclose(ratio.flatten()[0] / rest.flatten()[0], torch.tensor(2.0))  # x2


def test_pair_has_equal_length(encoder):
    long_negative = ", ".join(_words(120))
    pos, neg = encoder.encode_pair("a girl", long_negative)
    assert pos.shape == neg.shape and pos.shape[1] == 77 * len(encoder.chunks(long_negative))
    # the padding chunk of the short prompt is the empty prompt's encoding
    assert torch.equal(pos[:, 77:154], encoder.encode("")[:, :77])


def test_multi_vector_names_are_expanded(encoder):
    encoder.vectors = {"EasyNegative": 3}
    try:
        assert encoder.expand("bad, EasyNegative, EasyNegatives") == (
            "bad, EasyNegative EasyNegative_1 EasyNegative_2, EasyNegatives"
        )
    finally:
        encoder.vectors = {}
