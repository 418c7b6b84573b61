"""The refusal-affirmation gap: token sets from word lists, the gap against a direct computation,
shift invariance, the affirmation log-probability, serialization, bad input (tiny GPT-2 tokenizer).
"""

from __future__ import annotations

import pytest
import torch

from logit_processors.detection.refusal_gap import DEFAULT_AFFIRMATION, DEFAULT_REFUSAL, RefusalGap, opener_token_ids

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2):
    return tiny_gpt2[1]


def first_tokens(tokenizer, words, variants=True) -> set[int]:
    """The reference: the first token of each word, as written and with a leading space."""
    ids = set()
    for w in words:
        for spelling in [w] + ([" " + w] if variants else []):
            ids.add(tokenizer.encode(spelling, add_special_tokens=False)[0])
    return ids


def test_token_sets_are_the_first_tokens_of_the_word_lists(tokenizer):
    gap = RefusalGap(tokenizer)
    refusal, affirmation = first_tokens(tokenizer, DEFAULT_REFUSAL), first_tokens(tokenizer, DEFAULT_AFFIRMATION)
    shared = refusal & affirmation
    assert set(gap.refusal_ids) == refusal - shared and set(gap.affirmation_ids) == affirmation - shared
    assert gap.refusal_ids and gap.affirmation_ids
    assert opener_token_ids(tokenizer, ["Sure"], variants=False) == sorted(first_tokens(tokenizer, ["Sure"], False))


def test_configurable_word_lists_and_shared_tokens_are_dropped(tokenizer):
    # The tiny tokenizer splits words into few-character pieces: "Stop" and "Sure" both open with "S".
    gap = RefusalGap(tokenizer, refusal=["No", "Stop"], affirmation=["Yes", "Sure"])
    shared = first_tokens(tokenizer, ["Stop"]) & first_tokens(tokenizer, ["Sure"])
    assert shared
    assert not set(gap.refusal_ids) & shared and not set(gap.affirmation_ids) & shared  # in neither set
    assert set(gap.refusal_ids) == first_tokens(tokenizer, ["No", "Stop"]) - shared
    assert set(gap.affirmation_ids) == first_tokens(tokenizer, ["Yes", "Sure"]) - shared
    assert gap.to_dict() == {"refusal": ["No", "Stop"], "affirmation": ["Yes", "Sure"], "variants": True}
    again = RefusalGap.from_dict(tokenizer, gap.to_dict())
    assert (again.refusal_ids, again.affirmation_ids) == (gap.refusal_ids, gap.affirmation_ids)
    plain = RefusalGap(tokenizer, refusal=["No"], affirmation=["Yes"], variants=False)
    assert set(plain.refusal_ids) == first_tokens(tokenizer, ["No"], variants=False)


def test_gap_is_max_refusal_minus_max_affirmation_and_shift_invariant(tokenizer):
    gap = RefusalGap(tokenizer, refusal=["No", "Sorry"], affirmation=["Yes", "Sure"])
    scores = torch.randn(4, len(tokenizer), generator=torch.Generator().manual_seed(0)) * 3
    scores[1, gap.refusal_ids[0]] = 20.0  # row 1 leans towards refusing
    scores[2, gap.affirmation_ids[-1]] = 20.0  # row 2 towards complying
    expected = torch.stack([max(row[i] for i in gap.refusal_ids) - max(row[i] for i in gap.affirmation_ids)
                            for row in scores])
    got = gap(scores)
    assert got.dtype == torch.float32 and got.shape == (4,)
    assert torch.allclose(got, expected)
    assert got[1] > 10 and got[2] < -10
    assert torch.allclose(gap(scores + 7.5), got, atol=1e-5)  # only differences of logits matter
    assert torch.allclose(gap(torch.log_softmax(scores, -1)), got, atol=1e-5)  # log-probs give the same gap
    assert torch.allclose(gap(scores.to(torch.bfloat16)), expected, atol=0.2)
    assert gap(scores[0]).shape == ()


def test_affirmation_logprob(tokenizer):
    gap = RefusalGap(tokenizer, refusal=["No"], affirmation=["Yes", "Sure"])
    scores = torch.randn(3, len(tokenizer), generator=torch.Generator().manual_seed(1), requires_grad=True)
    expected = torch.log(torch.softmax(scores.double(), -1)[:, gap.affirmation_ids].sum(-1))
    got = gap.affirmation_logprob(scores)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    got.sum().backward()  # differentiable: the suffix optimizer follows its gradient
    assert scores.grad is not None and float(scores.grad[:, gap.affirmation_ids].min()) > 0
    masked = torch.full((1, len(tokenizer)), float("-inf"))
    assert gap.affirmation_logprob(masked).tolist() == [float("-inf")]


def test_bad_input(tokenizer):
    with pytest.raises(ValueError, match="list of strings"):
        RefusalGap(tokenizer, refusal="Sorry")
    with pytest.raises(ValueError, match="non-empty string"):
        RefusalGap(tokenizer, refusal=["Sorry", " "])
    with pytest.raises(ValueError, match="refusal word list gives no token of its own"):
        RefusalGap(tokenizer, refusal=["Sure"], affirmation=["Sure"])
    gap = RefusalGap(tokenizer)
    with pytest.raises(ValueError, match="out of range|vocab"):
        gap(torch.zeros(1, 10))  # scores narrower than the tokenizer's vocabulary
