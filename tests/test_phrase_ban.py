"""PhraseBan: the masked set equals a brute-force reference and Hugging Face's NoBadWords."""


import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers.generation.logits_process import NoBadWordsLogitsProcessor

import logit_processors.processors.phrase_ban as phrase_ban_module
from logit_processors import Chain, PhraseBan, TokenMask
from logit_processors.processors.phrase_ban import phrase_variants

NEG_INF = float("-inf")


def reference_mask(input_ids: torch.Tensor, sequences, width: int) -> torch.Tensor:
    """Brute force: token t is masked in a row iff some banned s has s[:-1] == the row's last
    len(s) - 1 tokens and s[-1] == t."""
    mask = torch.zeros(input_ids.shape[0], width, dtype=torch.bool)
    for row, history in enumerate(input_ids.tolist()):
        for seq in sequences:
            prefix = list(seq[:-1])
            if len(prefix) <= len(history) and history[len(history) - len(prefix) :] == prefix:
                mask[row, seq[-1]] = True
    return mask


def masked(out: torch.Tensor) -> torch.Tensor:
    return out == NEG_INF


@pytest.fixture(scope="module")
def tokenizer():
    """A real byte-level BPE tokenizer (vocab 1000) trained on Python's own help text (~1 s)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = "\n".join(topics.values())[:100_000]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([text[i : i + 1000] for i in range(0, len(text), 1000)], trainer)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=eos, eos_token=eos, pad_token=eos)


# --------------------------------------------------------------------------------------------
# Property tests against the brute-force reference and HF, over multi-step call patterns


@st.composite
def ban_cases(draw):
    """A small vocabulary, banned sequences, and histories drawn mostly from the banned tokens
    (so that prefixes actually match)."""
    vocab = draw(st.integers(5, 40))
    token = st.integers(0, vocab - 1)
    sequences = draw(st.lists(st.lists(token, min_size=1, max_size=4), min_size=1, max_size=12))
    used = sorted({t for seq in sequences for t in seq})
    history_token = st.one_of(st.sampled_from(used), token)
    batch = draw(st.integers(1, 5))
    length = draw(st.integers(1, 12))
    first = draw(st.lists(st.lists(history_token, min_size=length, max_size=length), min_size=batch, max_size=batch))
    # Each later call: "append" (next step, same rows), "beam" (rows reordered and duplicated,
    # then one token appended) or "new" (an unrelated batch: a new generate() call).
    steps = draw(st.lists(st.sampled_from(["append", "beam", "new"]), min_size=1, max_size=6))
    calls = [first]
    for kind in steps:
        prev = calls[-1]
        if kind == "new":
            b, t = draw(st.integers(1, 5)), draw(st.integers(1, 12))
            rows = draw(st.lists(st.lists(history_token, min_size=t, max_size=t), min_size=b, max_size=b))
        else:
            if kind == "beam":
                parents = draw(st.lists(st.integers(0, len(prev) - 1), min_size=len(prev), max_size=len(prev)))
            else:
                parents = list(range(len(prev)))
            rows = [prev[p] + [draw(history_token)] for p in parents]
        calls.append(rows)
    return vocab, sequences, calls


@given(ban_cases())
def test_masked_set_equals_reference_over_call_patterns(case):
    vocab, sequences, calls = case
    ban = PhraseBan.from_token_ids(sequences)
    width = vocab + 1  # one column nothing bans: no row can end up empty
    for rows in calls:
        input_ids = torch.tensor(rows)
        scores = torch.randn(len(rows), width)
        out = ban(input_ids, scores)
        assert torch.equal(masked(out), reference_mask(input_ids, sequences, width))
        assert torch.equal(out[~masked(out)], scores[~masked(out)])


@given(ban_cases())
def test_masked_set_equals_huggingface_no_bad_words(case):
    vocab, sequences, calls = case
    ban = PhraseBan.from_token_ids(sequences)
    hf = NoBadWordsLogitsProcessor(sequences)
    for rows in calls:
        input_ids = torch.tensor(rows)
        scores = torch.randn(len(rows), vocab + 1)
        assert torch.equal(masked(ban(input_ids, scores)), masked(hf(input_ids, scores)))


def test_many_phrases_match_huggingface():
    gen = torch.Generator().manual_seed(0)
    vocab = 500
    lengths = torch.randint(1, 5, (3000,), generator=gen).tolist()
    # Multi-token phrases over 30 tokens (dense overlaps, deep failure chains); single tokens elsewhere.
    sequences = [
        torch.randint(0, 30, (n,), generator=gen).tolist() if n > 1 else [int(torch.randint(30, vocab, ()))]
        for n in lengths
    ]
    ban = PhraseBan.from_token_ids(sequences)
    hf = NoBadWordsLogitsProcessor(sequences)
    input_ids = torch.randint(0, 30, (16, 20), generator=gen)
    scores = torch.randn(16, vocab, generator=gen)
    out = ban(input_ids, scores)
    assert torch.equal(masked(out), masked(hf(input_ids, scores)))
    assert torch.equal(masked(out), reference_mask(input_ids, sequences, vocab))
    assert masked(out).sum(dim=1).gt(len({s[0] for s in sequences if len(s) == 1})).any()  # prefixes matched


def test_overlapping_phrases_use_failure_links():
    # History "1 2 3": "2 3" is a suffix that is not on the trie path 1-2-3-... ; Aho-Corasick
    # must still find it (and "3" via the chain).
    ban = PhraseBan.from_token_ids([[1, 2, 3, 4], [2, 3, 5], [3, 6], [9]])
    out = ban(torch.tensor([[1, 2, 3], [0, 2, 3], [0, 0, 3], [1, 2, 0]]), torch.zeros(4, 10))
    assert [row.nonzero().flatten().tolist() for row in masked(out)] == [[4, 5, 6, 9], [5, 6, 9], [6, 9], [9]]


# --------------------------------------------------------------------------------------------
# The processor contract


def test_input_never_modified_and_idempotent():
    ban = PhraseBan.from_token_ids([[1], [2, 3]])
    input_ids = torch.tensor([[0, 2], [2, 0]])
    scores = torch.randn(2, 6)
    before = scores.clone()
    once = ban(input_ids, scores)
    assert torch.equal(scores, before)
    assert once is not scores
    assert torch.equal(ban(input_ids, once), once)


def test_returns_the_same_object_when_nothing_is_banned_here():
    ban = PhraseBan.from_token_ids([[1, 2]])
    scores = torch.randn(1, 4)
    assert ban(torch.tensor([[0, 3]]), scores) is scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    ban = PhraseBan.from_token_ids([[3], [1, 2], [0, 1, 4]])
    input_ids = torch.tensor([[5, 0, 1], [5, 5, 1]])
    scores = torch.randn(2, 8).to(dtype)
    out = ban(input_ids, scores)
    assert out.dtype == dtype
    assert torch.equal(masked(out), reference_mask(input_ids, ban.sequences, 8))
    assert torch.equal(out[~masked(out)], scores[~masked(out)])


def test_many_single_tokens_take_the_dense_path():
    banned = [[i] for i in range(0, 40, 2)] + [[1, 3]]  # half the columns: dense static mask
    ban = PhraseBan.from_token_ids(banned)
    input_ids = torch.tensor([[1], [0]])
    out = ban(input_ids, torch.randn(2, 40))
    assert torch.equal(masked(out), reference_mask(input_ids, banned, 40))


def test_states_with_many_completions_and_strided_scores_give_the_reference_mask():
    # State [1] completes 200 phrases (written through its cached index tensor), state [2] one
    # (written through the batch's flat offsets), in the same call; then the same on a strided
    # (transposed) scores tensor, which the flat offsets need made contiguous.
    many = phrase_ban_module._FEW_TOKENS + 136
    banned = [[1, t] for t in range(100, 100 + many)] + [[2, 7], [5]]
    ban = PhraseBan.from_token_ids(banned)
    input_ids = torch.tensor([[0, 1], [0, 2], [3, 3], [2, 1]])
    width = 400
    expected = reference_mask(input_ids, banned, width)
    assert expected.sum(dim=1).tolist() == [many + 1, 2, 1, many + 1]
    scores = torch.randn(4, width)
    strided = torch.randn(width, 4).t()
    for s in (scores, strided):
        before = s.clone()
        out = ban(input_ids, s)
        assert torch.equal(masked(out), expected)
        assert torch.equal(out[~expected], s[~expected]) and torch.equal(s, before)


def test_reset_and_reuse_across_generations():
    sequences = [[1, 2], [2, 2, 3]]
    ban = PhraseBan.from_token_ids(sequences)
    for rows in ([[0, 1], [2, 2]], [[2, 2, 1]], [[1], [1], [2]]):  # batches of different shapes
        input_ids = torch.tensor(rows)
        assert torch.equal(masked(ban(input_ids, torch.zeros(len(rows), 5))), reference_mask(input_ids, sequences, 5))
    ban.reset()
    input_ids = torch.tensor([[2, 2]])
    assert masked(ban(input_ids, torch.zeros(1, 5)))[0].nonzero().flatten().tolist() == [3]


def test_empty_history_bans_only_single_tokens():
    ban = PhraseBan.from_token_ids([[1], [2, 3]])
    out = ban(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 5))
    assert masked(out).nonzero()[:, 1].tolist() == [1, 1]


def test_fully_masked_row_raises_by_default():
    ban = PhraseBan.from_token_ids([[0], [1], [2, 2]])
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        ban(torch.tensor([[0], [2]]), torch.zeros(2, 3))


def test_fully_masked_row_after_another_processor_raises():
    # TokenMask leaves one token; PhraseBan bans it: the witness column is -inf, the full check runs.
    chain = Chain(TokenMask(allow=[3]), PhraseBan.from_token_ids([[2, 3]]))
    with pytest.raises(ValueError, match="PhraseBan masked every token"):
        chain(torch.tensor([[0], [2]]), torch.tensor([[0.0, 0, 0, 1], [0.0, 0, 0, 1]]))


def test_keep_eos_keeps_eos():
    ban = PhraseBan.from_token_ids([[0], [1], [2, 2]], on_empty="keep_eos", eos_token_id=1)
    out = ban(torch.tensor([[0], [2]]), torch.zeros(2, 3))
    assert masked(out).tolist() == [[True, True, False], [True, False, True]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([], None), "phrases must be a non-empty list"),
        ((["ok", ""], None), r"phrases\[1\] is the empty string"),
        ((["ok", 3], None), r"phrases\[1\] must be a string"),
        (("just a string", None), "phrases must be a non-empty list of strings"),
        ((["ok"], object()), "tokenizer must be a Hugging Face tokenizer"),
        ((["ok"], "gpt2"), "not the name or path 'gpt2'"),
    ],
)
def test_bad_phrases(args, message):
    with pytest.raises((ValueError, TypeError), match=message):  # TypeError for a tokenizer that is none
        PhraseBan(*args)


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([], "sequences must be a non-empty list"),
        ([[1], []], r"sequences\[1\] is empty"),
        ([[1, -2]], r"sequences\[0\] contains negative token ids"),
        ([[1, 2.5]], r"sequences\[0\] must contain integer token ids"),
        ([3, 4], r"sequences\[0\] must be a list of token ids"),
    ],
)
def test_bad_sequences(sequences, message):
    with pytest.raises(ValueError, match=message):
        PhraseBan.from_token_ids(sequences)


def test_ids_outside_the_scores_are_refused_at_the_first_call():
    ban = PhraseBan.from_token_ids([[1, 7], [9]])
    with pytest.raises(ValueError, match=r"token ids \[7, 9\].*5 columns"):
        ban(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 5))
    ban(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 10))  # a wide enough head is fine


def test_bad_policy():
    with pytest.raises(ValueError, match="on_empty"):
        PhraseBan.from_token_ids([[1]], on_empty="ignore")
    with pytest.raises(ValueError, match="eos_token_id"):
        PhraseBan.from_token_ids([[1]], on_empty="keep_eos")


def test_repr():
    assert repr(PhraseBan.from_token_ids([[1], [1, 2]])) == "PhraseBan(sequences=2, on_empty='raise')"


# --------------------------------------------------------------------------------------------
# With a real tokenizer


def test_phrase_variants():
    assert phrase_variants("New York") == ["New York", " New York"]
    assert phrase_variants(" York ") == [" York ", "York", " York"]
    assert phrase_variants("New York", variants=False) == ["New York"]
    assert phrase_variants("new york", variants=False, case_variants=True) == [
        "new york",
        "New york",
        "NEW YORK",
    ]
    assert phrase_variants("  ") == ["  "]


def test_tokenizer_phrases_are_banned_in_their_variants(tokenizer):
    ban = PhraseBan(["the object", "class"], tokenizer)
    forms = ["the object", " the object", "class", " class"]
    expected = {tuple(tokenizer.encode(form, add_special_tokens=False)) for form in forms}
    assert set(ban.sequences) == expected
    assert ban.phrases == ["the object", "class"]
    # After " ... the", the token " object" is banned; after "the" (line start) too.
    for context in [" is the", "\nthe", "the"]:
        input_ids = torch.tensor([tokenizer.encode(context, add_special_tokens=False)])
        out = ban(input_ids, torch.zeros(1, len(tokenizer)))
        assert bool(masked(out)[0, tokenizer.encode(" object")[0]])


def test_case_variants(tokenizer):
    plain = PhraseBan(["the object"], tokenizer)
    cased = PhraseBan(["the object"], tokenizer, case_variants=True)
    for form in ["The object", "THE OBJECT", " The object"]:
        ids = tuple(tokenizer.encode(form, add_special_tokens=False))
        assert ids in set(cased.sequences) and ids not in set(plain.sequences)


def test_only_as_given_without_variants(tokenizer):
    ban = PhraseBan([" the object"], tokenizer, variants=False)
    assert ban.sequences == [tuple(tokenizer.encode(" the object"))]


def test_tokenizer_eos_is_the_keep_eos_default(tokenizer):
    ban = PhraseBan(["x"], tokenizer, on_empty="keep_eos")
    assert ban._eos_ids == [tokenizer.eos_token_id]


def test_a_different_tokenization_is_not_blocked(tokenizer):
    # Documented limitation: the canonical tokenization is banned, a character-by-character
    # spelling of the same text is not.
    ban = PhraseBan(["object"], tokenizer, variants=False)
    spelled = tokenizer.convert_tokens_to_ids(list("objec"))
    out = ban(torch.tensor([spelled]), torch.zeros(1, len(tokenizer)))
    assert not bool(masked(out)[0, tokenizer.convert_tokens_to_ids("t")])
