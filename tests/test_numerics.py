"""Shared numerics against float64 references, on rows with -inf entries and fully masked rows."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import numerics

NEG_INF = float("-inf")

finite_logits = st.floats(min_value=-50, max_value=50, allow_nan=False, width=32)


def rows(min_size=1, max_size=40, masked_fraction=True):
    entry = st.one_of(finite_logits, st.just(NEG_INF)) if masked_fraction else finite_logits
    return st.lists(entry, min_size=min_size, max_size=max_size)


def reference_log_softmax(row: list[float]) -> list[float]:
    finite = [x for x in row if x != NEG_INF]
    if not finite:
        return [NEG_INF] * len(row)
    m = max(finite)
    lse = m + math.log(sum(math.exp(x - m) for x in finite))
    return [x - lse if x != NEG_INF else NEG_INF for x in row]


@given(rows())
def test_log_softmax_matches_float64_reference_and_never_nan(row):
    got = numerics.log_softmax(torch.tensor([row]))[0]
    want = torch.tensor(reference_log_softmax(row), dtype=torch.float64)
    assert not torch.isnan(got).any()
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite].double(), want[finite], atol=1e-5, rtol=1e-5)


@given(rows(masked_fraction=False), st.floats(-1000, 1000))
def test_log_softmax_is_shift_invariant(row, shift):
    z = torch.tensor([row], dtype=torch.float64)
    torch.testing.assert_close(numerics.log_softmax(z + shift), numerics.log_softmax(z), atol=2e-4, rtol=0)


def test_fully_masked_row_stays_masked_everywhere():
    z = torch.full((2, 5), NEG_INF)
    z[1, 2] = 3.0
    assert torch.equal(numerics.logsumexp(z), torch.tensor([NEG_INF, 3.0]))
    lp = numerics.log_softmax(z)
    assert torch.isneginf(lp[0]).all() and lp[1, 2] == 0
    assert torch.equal(numerics.softmax(z)[0], torch.zeros(5))
    assert torch.equal(numerics.entropy(z), torch.zeros(2))
    assert torch.equal(numerics.normalized_entropy(z), torch.zeros(2))
    assert torch.equal(numerics.fully_masked_rows(z), torch.tensor([True, False]))


def test_fully_masked_rows_reports_nan_rows():
    z = torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])
    assert numerics.fully_masked_rows(z).tolist() == [True, False]


@given(st.floats(min_value=-800, max_value=0, allow_nan=False))
def test_log1mexp_matches_high_precision_reference(a):
    import mpmath

    mpmath.mp.dps = 400  # enough digits that 1 - exp(a) keeps precision for a down to -800
    got = numerics.log1mexp(torch.tensor(a, dtype=torch.float64)).item()
    if a == 0:
        assert got == NEG_INF
        return
    want = float(mpmath.log1p(-mpmath.exp(a)))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_log1mexp_endpoints_and_no_nan():
    a = torch.tensor([NEG_INF, -1e-30, -1e-8, -0.5, -0.6931471805599453, -1.0, -40.0, 0.0])
    out = numerics.log1mexp(a)
    assert not torch.isnan(out).any()
    assert out[0] == 0 and out[-1] == NEG_INF
    # Near zero, 1 - exp(a) cancels catastrophically; the expm1 branch keeps full precision.
    assert out[1].item() == pytest.approx(math.log(1e-30), rel=1e-6)


@given(st.floats(min_value=1e-30, max_value=1 - 1e-7))
def test_log_odds_is_logit_of_p(p):
    got = numerics.log_odds(torch.tensor(math.log(p), dtype=torch.float64)).item()
    assert got == pytest.approx(math.log(p) - math.log1p(-p), rel=1e-9, abs=1e-9)


def test_log_odds_extremes():
    out = numerics.log_odds(torch.tensor([NEG_INF, 0.0, math.log(0.5)]))
    assert out.tolist() == [NEG_INF, float("inf"), 0.0]


@given(rows(min_size=2))
def test_entropy_matches_reference_and_is_bounded(row):
    z = torch.tensor([row])
    p = [math.exp(x) for x in reference_log_softmax(row)]
    want = -sum(pi * math.log(pi) for pi in p if pi > 0)
    assert numerics.entropy(z).item() == pytest.approx(want, abs=1e-4)
    h = numerics.normalized_entropy(z).item()
    assert 0.0 <= h <= 1.0


def test_normalized_entropy_is_one_for_uniform_and_zero_for_one_hot():
    uniform = torch.zeros(1, 1000)
    uniform[0, :10] = NEG_INF
    assert numerics.normalized_entropy(uniform).item() == pytest.approx(1.0, abs=1e-6)
    assert numerics.normalized_entropy(torch.tensor([[0.0, NEG_INF, NEG_INF]])).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_reduced_in_float32(dtype):
    z = (torch.randn(3, 5000) * 30).to(dtype)
    assert numerics.log_softmax(z).dtype == torch.float32
    torch.testing.assert_close(numerics.log_softmax(z), numerics.log_softmax(z.float()))
    assert torch.isfinite(numerics.entropy(z)).all()


def test_entropy_of_a_wide_row_is_accurate_in_float32():
    # 262,144 logits of four spreads, a third masked: float32 within the rounding bound below of
    # float64 on the same inputs (-sum(softmax * log_softmax) in float32 is off by 4e-5 to 1e-4 here).
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 262_144, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [3.0], [8.0], [20.0]])
    z[:, ::3] = NEG_INF
    z = z.float().double()  # the float32 inputs, exactly
    p = torch.softmax(z, dim=-1)
    want = -(p * torch.log(p).nan_to_num(neginf=0.0)).sum(dim=-1)
    got = numerics.entropy(z.float())
    assert got.dtype == torch.float32
    # H = log s - log q_top - E_q[y] / s with y = z - max <= 0: two float32 sums over V terms of
    # one sign (s = sum q, sum q * y), each off by ~sqrt(log2 V) eps relative (pairwise summation,
    # statistically; the order, so the error, differs with a CPU's vector width), which H feels
    # times 1 + 2 |E_p[y]| (<= 10 here): 4.9e-6. (Another summation order of these very inputs, a
    # column permutation, moves the error up to 1.6e-6, above the 1e-6 once asserted here.)
    e_y = (p * (z - z.amax(-1, keepdim=True)).nan_to_num(neginf=0.0)).sum(-1).abs().max().item()
    bound = math.sqrt(math.log2(z.shape[-1])) * torch.finfo(torch.float32).eps * (1 + 2 * e_y)
    torch.testing.assert_close(got.double(), want, atol=bound, rtol=0)
    # Exactly uniform over the unmasked entries: normalized entropy 1, so the masks were counted.
    uniform = torch.zeros(2, 262_144)
    uniform[0, :100_000] = NEG_INF
    # y = 0 and q all equal: only the sum s (log2(n) eps worst case, pairwise) and two logs round,
    # ~3e-7 after dividing by log n = 12.
    torch.testing.assert_close(numerics.normalized_entropy(uniform), torch.ones(2), atol=1e-6, rtol=0)


def test_nan_and_fully_masked_rows_have_no_entropy_and_leave_other_rows_alone():
    z = torch.tensor([[1.0, float("nan"), 0.0], [NEG_INF, NEG_INF, NEG_INF], [0.0, 0.0, NEG_INF]])
    assert numerics.entropy(z).tolist() == pytest.approx([0.0, 0.0, math.log(2)])
    assert numerics.normalized_entropy(z).tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert numerics.entropy(z.double()).dtype == torch.float64  # float64 stays float64
