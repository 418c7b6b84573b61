"""TokenMask: allow/deny ids and bool masks, per-row masks, padded LM heads, bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import TokenMask

NEG_INF = float("-inf")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def ids(b: int) -> torch.Tensor:
    return torch.zeros(b, 1, dtype=torch.long)


@st.composite
def mask_case(draw):
    v = draw(st.integers(2, 60))
    b = draw(st.integers(1, 4))
    allow = draw(st.none() | st.sets(st.integers(0, v - 1), min_size=1))
    deny = draw(st.sets(st.integers(0, v - 1)) if allow is not None else st.sets(st.integers(0, v - 1), max_size=v - 1))
    if allow is not None and allow <= deny:
        deny = set()
    return v, b, allow, deny


@given(mask_case(), st.sampled_from(DTYPES))
def test_masked_set_is_exactly_denied_or_not_allowed(case, dtype):
    v, b, allow, deny = case
    scores = torch.randn(b, v).to(dtype)
    original = scores.clone()
    proc = TokenMask(allow=allow, deny=deny or None) if allow is not None or deny else None
    if proc is None:
        return
    out = proc(ids(b), scores)
    assert torch.equal(scores, original), "input tensor was modified"
    assert out.dtype == dtype
    removed = {i for i in range(v) if (allow is not None and i not in allow) or i in deny}
    for i in range(v):
        if i in removed:
            assert torch.isneginf(out[:, i]).all()
        else:
            assert torch.equal(out[:, i], scores[:, i])
    assert torch.equal(proc(ids(b), out), out), "masking twice must equal masking once"


def test_large_lists_take_the_dense_path_with_the_same_result():
    v = 20000
    scores = torch.randn(3, v)
    allow = list(range(0, v, 2))
    out = TokenMask(allow=allow)(ids(3), scores)
    assert torch.isneginf(out[:, 1::2]).all() and torch.equal(out[:, ::2], scores[:, ::2])
    out = TokenMask(deny=allow)(ids(3), scores)
    assert torch.isneginf(out[:, ::2]).all() and torch.equal(out[:, 1::2], scores[:, 1::2])


def test_per_row_bool_masks():
    scores = torch.randn(2, 4)
    allow = torch.tensor([[True, False, True, False], [False, True, False, False]])
    out = TokenMask(allow=allow)(ids(2), scores)
    assert torch.equal(torch.isneginf(out), ~allow)
    deny = torch.tensor([[True, False, False, False], [False, False, False, True]])
    out = TokenMask(deny=deny)(ids(2), scores)
    assert torch.equal(torch.isneginf(out), deny)
    # One mask row per prompt, expanded to generate()'s consecutive rows per prompt.
    out = TokenMask(deny=deny)(ids(4), torch.randn(4, 4))
    assert torch.equal(torch.isneginf(out), deny.repeat_interleave(2, 0))
    with pytest.raises(ValueError, match="per-row mask has 2 rows but the batch has 3"):
        TokenMask(deny=deny)(ids(3), torch.randn(3, 4))


def test_padded_lm_head_wider_scores():
    # 10 real tokens, LM head padded to 16 columns.
    scores = torch.randn(2, 16)
    out = TokenMask(allow=[1, 2], vocab_size=10)(ids(2), scores)
    assert torch.isfinite(out).sum().item() == 4 and torch.isneginf(out[:, 10:]).all()
    out = TokenMask(deny=[1], vocab_size=10)(ids(2), scores)
    assert torch.equal(out[:, 10:], scores[:, 10:])
    narrow_mask = torch.zeros(10, dtype=torch.bool)
    narrow_mask[3] = True
    out = TokenMask(allow=narrow_mask)(ids(2), scores)
    assert torch.isfinite(out).sum().item() == 2
    out = TokenMask(deny=narrow_mask)(ids(2), scores)
    assert torch.isneginf(out).sum().item() == 2


def test_narrower_scores_are_refused():
    with pytest.raises(ValueError, match="scores have 8 columns but this TokenMask was built for vocab_size=10"):
        TokenMask(deny=[1], vocab_size=10)(ids(1), torch.randn(1, 8))
    with pytest.raises(ValueError, match="allow mask has 10 columns but scores have only 8"):
        TokenMask(allow=torch.ones(10, dtype=torch.bool))(ids(1), torch.randn(1, 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "needs allow=..., deny=... or both"),
        ({"deny": [3, -1, -5]}, r"deny contains negative token ids \[-5, -1\]"),
        ({"allow": [1, 12], "vocab_size": 10}, r"allow contains token ids \[12\] outside the vocabulary"),
        ({"deny": "abc"}, "deny must be an iterable of token ids"),
        ({"deny": [1.5]}, "deny must contain integer token ids"),
        ({"allow": torch.ones(3)}, "allow as a tensor must be a bool mask"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenMask(**kwargs)


def test_out_of_range_ids_are_named_at_first_call():
    proc = TokenMask(deny=[2, 50, 70])
    with pytest.raises(ValueError, match=r"deny contains token ids \[50, 70\] outside the vocabulary; allowed ids are 0..9"):
        proc(ids(1), torch.randn(1, 10))
    with pytest.raises(ValueError, match=r"allow contains token ids \[50\]"):
        TokenMask(allow=[50])(ids(1), torch.randn(1, 10))


def test_everything_masked_raises_or_keeps_eos():
    with pytest.raises(ValueError, match=r"masked every token in row\(s\) \[0, 1\]"):
        TokenMask(allow=[0], deny=[0])(ids(2), torch.randn(2, 5))
    out = TokenMask(allow=[1], deny=[1], on_empty="keep_eos", eos_token_id=[3, 4])(ids(2), torch.randn(2, 5))
    assert torch.equal(torch.isfinite(out), torch.tensor([[False, False, False, True, True]] * 2))


def test_reusable_and_cached_per_device_and_width():
    proc = TokenMask(deny=list(range(5000)))
    a = proc(ids(1), torch.randn(1, 6000))
    b = proc(ids(2), torch.randn(2, 7000))
    assert torch.isneginf(a[:, :5000]).all() and torch.isneginf(b[:, :5000]).all()
    assert torch.isfinite(b[:, 5000:]).all()
