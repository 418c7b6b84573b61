"""ColumnMask: its three methods (fill, keep, cap) give identical results, in every dtype."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import TokenMask
from logit_processors.processors.column_mask import ColumnMask

NEG_INF = float("-inf")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def reference(scores: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    out = scores.clone()
    out[removed.expand_as(scores)] = NEG_INF
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["fill", "keep", "cap"])
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6), width=st.integers(1, 300), fraction=st.floats(0, 1))
def test_every_method_equals_the_reference(method, dtype, seed, batch, width, fraction):
    g = torch.Generator().manual_seed(seed)
    removed = torch.rand(width, generator=g) < fraction
    scores = torch.randn(batch, width, generator=g).to(dtype)
    scores[torch.rand(batch, width, generator=g) < 0.1] = NEG_INF  # upstream masks
    before = scores.clone()
    columns = ColumnMask(removed, method=method)
    out, witness = columns.apply(scores)
    assert torch.equal(out, reference(scores, removed))
    assert out.dtype == dtype and torch.equal(scores, before)  # input untouched
    if witness is not None:
        # A witness row with a finite value proves the row is not empty.
        finite = witness.reshape(batch, -1).isfinite().any(dim=-1)
        assert not (finite & (out == NEG_INF).all(dim=-1)).any()


@pytest.mark.parametrize("method", ["fill", "keep", "cap"])
def test_plus_infinity_in_a_removed_column_becomes_minus_infinity(method):
    removed = torch.tensor([True, False, False])
    columns = ColumnMask(removed, method=method)
    out, _ = columns.apply(torch.tensor([[float("inf"), 1.0, 2.0]]))
    assert out.tolist() == [[NEG_INF, 1.0, 2.0]]  # never NaN (a 0 / -inf bias would give one)


def test_per_row_masks_use_the_cap_method_and_expand_to_returned_sequences():
    removed = torch.tensor([[True, False, False], [False, False, True]])
    columns = ColumnMask(removed)
    assert columns.method == "cap"
    out, witness = columns.apply(torch.zeros(4, 3))  # two prompts, two rows each
    assert (out == NEG_INF).tolist() == [[True, False, False]] * 2 + [[False, False, True]] * 2
    assert witness is not None and witness.shape == (4,)  # column 1 is kept in every row


def test_the_method_follows_the_fraction_rule():
    # A scattered method only when it touches at most 1/256 of a row; a rule on sizes that holds on
    # every machine (benchmarks/run.py measures each method against it), not costs of one CPU.
    width = 51_200  # 200 columns are 1/256 of a row
    def removing(count):
        removed = torch.zeros(width, dtype=torch.bool)
        removed[:count] = True
        return removed

    assert ColumnMask(removing(10)).method == "fill"
    assert ColumnMask(removing(200)).method == "fill"  # exactly the fraction
    assert ColumnMask(removing(201)).method == "cap"
    assert ColumnMask(~removing(200)).method == "keep"
    assert ColumnMask(~removing(201)).method == "cap"
    assert ColumnMask(torch.arange(width) % 2 == 0).method == "cap"
    assert [ColumnMask.method_for_fraction(f) for f in (0.0, 1 / 256, 0.5, 1 - 1 / 256, 1.0)] == [
        "fill", "fill", "cap", "keep", "keep"
    ]
    for count in (10, 201, width - 10):  # the method changes, the result does not
        removed = removing(count)
        scores = torch.randn(8, width)
        assert torch.equal(ColumnMask(removed).apply(scores)[0], reference(scores, removed))


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="method must be one of"):
        ColumnMask(torch.zeros(3, dtype=torch.bool), method="scatter")


@pytest.mark.parametrize(("allow", "deny"), [(list(range(0, 400, 3)), None), (None, list(range(0, 400, 3))),
                                             (None, [5]), (list(range(399)), None)])
def test_token_mask_on_a_large_vocabulary_matches_the_reference(allow, deny):
    # Sizes where each method wins: the witness shortcut and the exact results together.
    scores = torch.randn(3, 400)
    proc = TokenMask(allow=allow, deny=deny)
    removed = torch.zeros(400, dtype=torch.bool)
    if allow is not None:
        removed |= ~torch.isin(torch.arange(400), torch.tensor(allow))
    if deny is not None:
        removed[deny] = True
    assert torch.equal(proc(torch.zeros(3, 1, dtype=torch.long), scores), reference(scores, removed))


@pytest.mark.parametrize("method", ["fill", "keep", "cap"])
def test_rows_emptied_by_the_mask_are_caught_whatever_the_method(method):
    proc = TokenMask(deny=[0, 1])
    scores = torch.tensor([[0.0, 1.0, NEG_INF], [0.0, 1.0, 2.0]])  # row 0 keeps nothing
    proc._columns[3] = ColumnMask(proc._removal(3), method=method)
    with pytest.raises(ValueError, match=r"row\(s\) \[0\]"):
        proc(torch.zeros(2, 1, dtype=torch.long), scores)
