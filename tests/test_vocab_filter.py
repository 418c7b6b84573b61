"""VocabFilter on a real byte-level BPE tokenizer: the masked set equals a per-id decode reference."""

import pytest
import torch

from logit_processors import VocabFilter

NEG_INF = float("-inf")


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


def digits_only(s: str) -> bool:
    return s.strip().isdigit()


def reference_allowed(tokenizer, predicate, keep_special=True) -> list[bool]:
    special = set(tokenizer.all_special_ids) if keep_special else set()
    return [i in special or predicate(tokenizer.decode([i])) for i in range(len(tokenizer))]


@pytest.mark.parametrize("predicate", [str.isascii, digits_only], ids=["ascii", "digits"])
def test_masked_set_equals_decode_reference(tokenizer, predicate):
    allowed = torch.tensor(reference_allowed(tokenizer, predicate))
    assert 0 < int(allowed.sum()) < len(tokenizer)  # the filter actually removes something
    scores = torch.randn(3, len(tokenizer))
    out = VocabFilter(tokenizer, predicate)(torch.zeros(3, 1, dtype=torch.long), scores)
    assert torch.equal(out != NEG_INF, allowed.expand(3, -1))
    assert torch.equal(out[:, allowed], scores[:, allowed])


def test_special_tokens_are_kept_unless_asked(tokenizer):
    eos = tokenizer.eos_token_id
    assert not digits_only(tokenizer.decode([eos]))
    ids, scores = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, len(tokenizer))
    assert VocabFilter(tokenizer, digits_only)(ids, scores)[0, eos] == 0
    strict = VocabFilter(tokenizer, digits_only, keep_special_tokens=False)
    assert strict(ids, scores)[0, eos] == NEG_INF
    expected = torch.tensor(reference_allowed(tokenizer, digits_only, keep_special=False))
    assert torch.equal(strict(ids, scores)[0] != NEG_INF, expected)


def test_padded_lm_head_masks_the_extra_columns(tokenizer):
    width = len(tokenizer) + 64
    out = VocabFilter(tokenizer, str.isascii)(torch.zeros(2, 1, dtype=torch.long), torch.randn(2, width))
    assert bool((out[:, len(tokenizer) :] == NEG_INF).all())
    assert torch.equal(out[0, : len(tokenizer)] != NEG_INF, torch.tensor(reference_allowed(tokenizer, str.isascii)))


def test_narrower_scores_are_refused(tokenizer):
    vocab_filter = VocabFilter(tokenizer, str.isascii)
    with pytest.raises(ValueError, match=rf"scores have 999 columns but the tokenizer has {len(tokenizer)} tokens"):
        vocab_filter(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, len(tokenizer) - 1))


def test_predicate_runs_once_and_masks_are_cached(tokenizer):
    calls = []

    def counting(s: str) -> bool:
        calls.append(s)
        return s.isascii()

    vocab_filter = VocabFilter(tokenizer, counting)
    at_construction = len(calls)
    assert at_construction == len(tokenizer) - len(tokenizer.all_special_ids)  # once per ordinary id
    ids, scores = torch.zeros(2, 1, dtype=torch.long), torch.randn(2, len(tokenizer))
    first = vocab_filter(ids, scores)
    cached = dict(vocab_filter._cache._tensors)
    second = vocab_filter(ids, scores)
    assert len(calls) == at_construction  # no re-decoding, no predicate calls per step
    assert vocab_filter._cache._tensors.keys() == cached.keys()
    assert all(vocab_filter._cache._tensors[k] is v for k, v in cached.items())
    assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtypes_and_input_untouched(tokenizer, dtype):
    scores = torch.randn(2, len(tokenizer)).to(dtype)
    before = scores.clone()
    out = VocabFilter(tokenizer, str.isascii)(torch.zeros(2, 1, dtype=torch.long), scores)
    assert out.dtype == dtype and torch.equal(scores, before)
    assert torch.equal(out[0] != NEG_INF, torch.tensor(reference_allowed(tokenizer, str.isascii)))


def test_everything_filtered_raises_or_keeps_eos(tokenizer):
    ids, scores = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, len(tokenizer))
    with pytest.raises(ValueError, match="masked every token"):
        VocabFilter(tokenizer, lambda s: False, keep_special_tokens=False)(ids, scores)
    keep = VocabFilter(tokenizer, lambda s: False, keep_special_tokens=False, on_empty="keep_eos")
    assert (keep(ids, scores)[0] != NEG_INF).nonzero().flatten().tolist() == [tokenizer.eos_token_id]


def test_non_callable_predicate(tokenizer):
    with pytest.raises(TypeError, match="predicate must be a callable"):
        VocabFilter(tokenizer, "ascii")
