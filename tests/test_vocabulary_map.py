"""Token bytes, the map between two vocabularies, and the member's distribution over the primary's
tokens, against brute-force definitions on the tiny GPT-2 / tiny Gemma pair (and real tokenizers).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors.models import load_tiny_gemma
from logit_processors.runtime.aligned_members import AlignedMember, member_distribution, split_unfinished_character
from logit_processors.runtime.text_codec import TextCodec, byte_level_alphabet
from logit_processors.runtime.vocabulary_map import VocabularyMap

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["The if statement", "café ☕ 日本語", "x = f(a, b)\n\n    return  x", "  two spaces", "\t\r\n"]


@pytest.fixture(scope="module")
def codecs(tiny_gpt2):
    gemma, gemma_tokenizer = load_tiny_gemma()
    return TextCodec.of(tiny_gpt2[1]), TextCodec.of(gemma_tokenizer), gemma


def test_tokens_spell_the_text_and_decoding_agrees(codecs, tiny_gpt2):
    gpt2, gemma, _ = codecs
    for codec in (gpt2, gemma):
        for text in TEXTS:
            ids = codec.encode(text)
            assert codec.text_of(ids) == text.encode()
            assert codec.tokenizer.decode(ids) == text
    assert len(byte_level_alphabet()) == 256 and sorted(byte_level_alphabet().values()) == list(range(256))


def test_a_text_that_cannot_be_spelled_is_named(codecs):
    _, gemma, _ = codecs
    with pytest.raises(ValueError, match=r"cannot encode the text 'a▁b' losslessly \(at character 1 of 3"):
        gemma.encode("a▁b")


@given(st.binary(max_size=12))
def test_unfinished_characters_are_held_back_and_nothing_else(data):
    text, pending = split_unfinished_character(data)
    assert len(pending) <= 3
    assert data.endswith(pending)
    head = data[: len(data) - len(pending)]
    assert text == head.decode("utf-8", errors="replace")
    if pending:  # a lead byte and continuation bytes, fewer than the lead byte announces
        assert pending[0] >= 0xC0 and all(0x80 <= b < 0xC0 for b in pending[1:])


def brute_force_targets(primary: TextCodec, member: TextCodec, m: int) -> set[int]:
    """The primary tokens member token m gives mass to, from the definition (vocabulary_map docstring)."""
    piece = member.pieces[m]
    pieces = {p for i, p in enumerate(member.pieces) if p and i not in member.special_ids}
    longest = {
        t for t, p in enumerate(primary.pieces)
        if p and t not in primary.special_ids and p.startswith(piece)
        and max((k for k in range(1, len(p) + 1) if p[:k] in pieces), default=0) == len(piece)
    }
    word_start = set()
    if piece[-1:].isspace() and member.encode(piece.decode() + "a")[:1] == [m]:
        word_start = set(primary.encode(piece.decode() + "a")[:1]) if len(primary.pieces[primary.encode(
            piece.decode() + "a")[0]]) <= len(piece) else set()
    return (longest | word_start) or set(primary.encode(piece.decode())[:1])


def test_every_member_token_goes_where_the_definition_says(codecs):
    gpt2, gemma, _ = codecs
    for primary, member in ((gpt2, gemma), (gemma, gpt2)):
        vmap = VocabularyMap(primary, member)
        got: dict[int, set[int]] = {}
        for m, t in zip(vmap.pairs.members.tolist(), vmap.pairs.primaries.tolist(), strict=True):
            got.setdefault(m, set()).add(t)
        for m, piece in enumerate(member.pieces):
            if m in member.special_ids:
                expected = set(primary.eos_ids) if m in member.eos_ids else set()
            else:
                try:
                    piece.decode("utf-8")
                except UnicodeDecodeError:
                    continue  # part of a character: mapped by its first byte (checked below)
                expected = brute_force_targets(primary, member, m)
            assert got.get(m, set()) == expected, (member.pieces[m], got.get(m), expected)


def test_extensions_are_the_longer_member_tokens_the_primary_would_stop_in(codecs):
    gpt2, gemma, _ = codecs
    vmap = VocabularyMap(gpt2, gemma)
    for prefix in (b" st", b"e", b" ", b"\n"):
        table = vmap.extensions(prefix)
        members = set(table.members.tolist())
        for m, piece in enumerate(gemma.pieces):
            if m in gemma.special_ids or not piece.startswith(prefix) or len(piece) == len(prefix):
                assert m not in members
                continue
            text = piece.decode()
            ends = set(gpt2.token_ends(gpt2.encode(text)))
            if text[-1].isspace() and gemma.encode(text + "a")[:1] == [m]:
                ends |= {e for e in gpt2.token_ends(gpt2.encode(text + "a")) if e <= len(piece)}
            assert (m in members) == (len(prefix) in ends), piece


def test_a_tokenizer_against_itself_gives_the_model_its_own_distribution(tiny_gpt2):
    """Through the text path, a model aligned with itself reproduces its own next-token distribution
    on canonically encoded text (no extension survives: the primary writes each token whole)."""
    model, tokenizer = tiny_gpt2
    codec = TextCodec.of(tokenizer)
    member = AlignedMember(model, codec, codec)
    ids = torch.tensor([codec.start_ids + codec.encode(TEXTS[0])])
    with torch.no_grad():
        logits = model(ids).logits[0, -1, : len(codec)]
    log_p = torch.log_softmax(logits, dim=-1)
    ours = member.next_token_log_probs(ids, log_p[None])[0]
    special = torch.tensor(sorted(codec.special_ids - codec.eos_ids), dtype=torch.long)
    expected = log_p.clone()
    expected[special] = -math.inf  # special tokens stand for no text (EOS excepted)
    expected = expected - torch.logsumexp(expected, dim=-1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_member_distribution_is_a_distribution_that_respects_masks(codecs):
    gpt2, gemma, model = codecs
    vmap = VocabularyMap.of(gpt2, gemma)
    ids = gemma.start_ids + gemma.encode("The if st")
    with torch.no_grad():
        q = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    primary = torch.log_softmax(torch.randn(len(gpt2), generator=torch.Generator().manual_seed(0)), dim=-1)
    p = member_distribution(vmap, q[-2], q[-1], ids[-1], b"", primary)
    assert float(torch.logsumexp(p, 0)) == pytest.approx(0.0, abs=1e-5) and not torch.isnan(p).any()
    masked = primary.clone()
    masked[:1000] = -math.inf
    p = member_distribution(vmap, q[-2], q[-1], ids[-1], b"", masked)
    assert float(torch.logsumexp(p, 0)) == pytest.approx(0.0, abs=1e-5)
    # Mass split by the primary's probabilities never lands on a token the primary rules out.
    split = vmap.pairs.group_primaries  # (and not reached otherwise, for this prefix)
    only_split = split[~torch.isin(split, vmap.pairs.single_primaries)]
    assert torch.isneginf(p[only_split[only_split < 1000]]).all()


def test_real_tokenizers_spell_every_token_and_the_map_covers_them():
    from logit_processors.models import load
    from real_models import require_named_model

    require_named_model("smollm2")
    require_named_model("gemma3-270m")
    smol, gemma = TextCodec.of(load("smollm2")[1]), TextCodec.of(load("gemma3-270m")[1])
    for text in TEXTS:
        assert smol.text_of(smol.encode(text)) == text.encode() == gemma.text_of(gemma.encode(text))
    vmap = VocabularyMap.of(smol, gemma)
    # Every SmolLM2 token that stands for text receives mass from some Gemma token.
    reached = vmap.reached
    textual = torch.tensor([i not in smol.special_ids for i in range(len(smol))])
    assert float(reached[textual].float().mean()) > 0.99
