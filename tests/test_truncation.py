"""TopK, TopP, MinP: the kept set is exactly Hugging Face's, ties and min_tokens_to_keep included.

Every comparison is on the removed set (``out == -inf``) against ``TopKLogitsWarper``,
``TopPLogitsWarper`` and ``MinPLogitsWarper`` run on the same tensor (half precision: on the
scores upcast to float32, TopP's documented semantics). Random tensors come from a seed that
hypothesis draws, so that shrinking still works and examples stay cheap.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import logit_processors.processors.truncation as truncation
from logit_processors import MinP, TopK, TopP

NEG_INF = float("-inf")
HALF = [torch.float16, torch.bfloat16]


def ids(b: int) -> torch.Tensor:
    return torch.zeros(b, 1, dtype=torch.long)


def removed(out: torch.Tensor) -> torch.Tensor:
    return out == NEG_INF


class SmallWindowTopP(TopP):
    """TopP whose top-k window path is used at the small vocabularies hypothesis draws.

    The default only opens a window for V >= 8,192; this one starts at 2 candidates and may
    grow to the whole vocabulary, so path 1 meets every tie and -inf pattern below.
    """

    INITIAL_WINDOW = 2
    GROWTH = 2
    WINDOW_LIMIT = 1.0


def random_scores(seed: int, b: int, v: int, kind: str, masked_fraction: float) -> torch.Tensor:
    """Scores of one of several shapes; some entries -inf, but never a whole row."""
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        scores = torch.randn(b, v, generator=g) * 3
    elif kind == "integers":  # heavy ties
        scores = torch.randint(-3, 4, (b, v), generator=g).float()
    elif kind == "equal":
        scores = torch.full((b, v), 1.5)
    else:  # "zipf": a realistic, heavy-headed distribution
        scores = zipf_logits(b, v, seed)
    if masked_fraction > 0:
        mask = torch.rand(b, v, generator=g) < masked_fraction
        mask[torch.arange(b), torch.randint(0, v, (b,), generator=g)] = False  # keep one per row
        scores = scores.masked_fill(mask, NEG_INF)
    return scores


def zipf_logits(b: int, v: int, seed: int, scale: float = 1.2) -> torch.Tensor:
    """LM-shaped logits: -1.1 * scale * log(rank) + noise, ranks randomly permuted per row."""
    g = torch.Generator().manual_seed(seed)
    base = -1.1 * scale * torch.log(torch.arange(1, v + 1, dtype=torch.float32))
    rows = [(base + 0.3 * torch.randn(v, generator=g))[torch.randperm(v, generator=g)] for _ in range(b)]
    return torch.stack(rows)


cases = st.tuples(
    st.integers(0, 2**31 - 1),
    st.integers(1, 6),
    st.integers(1, 300),
    st.sampled_from(["normal", "integers", "equal", "zipf"]),
    st.sampled_from([0.0, 0.0, 0.2, 0.7]),
)


# --------------------------------------------------------------------------------------------
# Kept set == Hugging Face's


@given(cases, st.integers(1, 400), st.integers(1, 8))
def test_top_k_matches_hugging_face(case, k, min_keep):
    scores = random_scores(*case)
    out = TopK(k, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    ref = TopKLogitsWarper(k, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    assert torch.equal(removed(out), removed(ref))


@given(cases, st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.integers(1, 8))
def test_min_p_matches_hugging_face_bit_for_bit(case, p, min_keep):
    scores = random_scores(*case)
    out = MinP(p, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    ref = MinPLogitsWarper(p, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    assert torch.equal(out, ref)


@given(
    cases,
    st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]),
    st.integers(1, 8),
    st.sampled_from([TopP, SmallWindowTopP]),
)
def test_top_p_matches_hugging_face(case, p, min_keep, cls):
    scores = random_scores(*case)
    out = cls(p, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    ref = TopPLogitsWarper(p, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), scores)
    assert torch.equal(removed(out), removed(ref))


def test_small_window_top_p_really_uses_its_windows():
    proc = SmallWindowTopP(0.9)
    for seed in range(20):
        proc(ids(4), random_scores(seed, 4, 200, "zipf", 0.0))
    assert proc.path_counts["window"] > 40


@pytest.mark.parametrize("dtype", [torch.float64, *HALF])
@given(case=cases, p=st.floats(0.0, 1.0), min_keep=st.integers(1, 4))
def test_top_p_other_dtypes_match_hugging_face_in_float32_or_float64(dtype, case, p, min_keep):
    scores = random_scores(*case).to(dtype)
    proc = SmallWindowTopP(p, min_tokens_to_keep=min_keep)
    out = proc(ids(scores.shape[0]), scores)
    reference_input = scores if dtype == torch.float64 else scores.float()
    ref = TopPLogitsWarper(p, min_tokens_to_keep=min_keep)(ids(scores.shape[0]), reference_input)
    assert out.dtype == dtype and not out.isnan().any()
    assert torch.equal(removed(out), removed(ref))


# --------------------------------------------------------------------------------------------
# Large vocabularies: the fast path is taken in the common case, the exact paths when needed


@pytest.fixture(scope="module")
def large_zipf():
    return {v: zipf_logits(4, v, seed=v) for v in (262144, 49152)}


@pytest.mark.parametrize("v, p", [(262144, 0.5), (262144, 0.9), (49152, 0.5)])
def test_top_p_large_vocab_takes_the_window_path_and_matches(large_zipf, v, p, monkeypatch):
    scores = large_zipf[v]
    ref = TopPLogitsWarper(p)(ids(4), scores)
    kept = (~removed(ref)).sum(-1)
    assert (kept > 1).all() and (kept < 2048).all()  # a real nucleus, inside the window ladder

    def no_sort(*args, **kwargs):
        raise AssertionError("sorted the vocabulary")

    proc = TopP(p)
    with monkeypatch.context() as patch:
        # Row-by-row close calls may legitimately sort; this data has none (margins checked).
        patch.setattr(torch, "sort", no_sort)
        patch.setattr(truncation.np, "sort", no_sort)
        out = proc(ids(4), scores)
    assert proc.path_counts == {"window": 4, "value_sort": 0, "full_sort": 0}
    assert torch.equal(removed(out), removed(ref))


def test_top_p_nucleus_beyond_the_window_ladder_matches(large_zipf):
    # At V = 49,152 a 2,048-candidate window costs more than sorting the row's values.
    scores = large_zipf[49152]
    proc = TopP(0.9)
    out = proc(ids(4), scores)
    assert proc.path_counts["full_sort"] == 0, proc.path_counts
    assert torch.equal(removed(out), removed(TopPLogitsWarper(0.9)(ids(4), scores)))


def test_top_p_close_call_goes_to_the_value_sort_and_matches(large_zipf):
    scores = large_zipf[262144][:2].clone()
    # Choose p so that row 0's nucleus mass lands exactly on p (in float64): a close call.
    probs = torch.softmax(scores[0].double(), -1).sort(descending=True).values
    p = float(probs[:300].sum())
    proc = TopP(p)
    out = proc(ids(2), scores)
    assert proc.path_counts["value_sort"] >= 1, proc.path_counts
    assert torch.equal(removed(out), removed(TopPLogitsWarper(p)(ids(2), scores)))


def test_top_p_tie_at_the_cut_goes_to_hugging_faces_own_sort_and_matches(large_zipf):
    # bfloat16 logits (upcast) have many exact ties, so the cut usually splits one.
    scores = large_zipf[49152].to(torch.bfloat16).float()
    proc = TopP(0.9)
    out = proc(ids(4), scores)
    assert proc.path_counts["full_sort"] >= 1, proc.path_counts
    assert torch.equal(removed(out), removed(TopPLogitsWarper(0.9)(ids(4), scores)))


def test_top_p_flat_logits_nucleus_larger_than_any_window_matches():
    scores = torch.randn(3, 49152, generator=torch.Generator().manual_seed(0))
    proc = TopP(0.9)
    out = proc(ids(3), scores)
    assert proc.path_counts["window"] == 0, proc.path_counts
    assert torch.equal(removed(out), removed(TopPLogitsWarper(0.9)(ids(3), scores)))


def test_top_p_window_is_remembered_and_shrinks_back():
    proc = TopP(0.9)
    broad = zipf_logits(1, 65536, seed=1, scale=1.2)  # nucleus of a few hundred tokens
    peaked = zipf_logits(1, 65536, seed=2, scale=1.6)  # nucleus of a few tokens
    proc(ids(1), broad)
    assert proc._window == 2048 and proc.path_counts["window"] == 1
    for _ in range(TopP.SHRINK_AFTER - 1):
        proc(ids(1), peaked)
    assert proc._window == 2048  # one peaked step does not shrink it...
    proc(ids(1), peaked)
    assert proc._window == TopP.INITIAL_WINDOW  # ...a long run of them does
    proc.reset()
    assert proc._window == TopP.INITIAL_WINDOW and sum(proc.path_counts.values()) == 0


@pytest.mark.parametrize("v", [262144, 49152])
def test_top_k_and_min_p_large_vocab_match(large_zipf, v):
    scores = large_zipf[v]
    assert torch.equal(removed(TopK(50)(ids(4), scores)), removed(TopKLogitsWarper(50)(ids(4), scores)))
    assert torch.equal(MinP(0.05)(ids(4), scores), MinPLogitsWarper(0.05)(ids(4), scores))


# --------------------------------------------------------------------------------------------
# Invariants


PROCESSORS = [
    lambda: TopK(3),
    lambda: TopK(1, min_tokens_to_keep=4),
    lambda: TopP(0.8),
    lambda: SmallWindowTopP(0.8, min_tokens_to_keep=2),
    lambda: MinP(0.1),
    lambda: MinP(0.3, min_tokens_to_keep=3),
]


@pytest.mark.parametrize("make", PROCESSORS)
@given(case=cases)
def test_kept_values_unchanged_and_input_untouched(make, case):
    scores = random_scores(*case)
    original = scores.clone()
    out = make()(ids(scores.shape[0]), scores)
    assert torch.equal(scores, original), "input tensor was modified"
    kept = ~removed(out)
    assert torch.equal(out[kept], scores[kept])
    assert kept.any(dim=-1).all(), "every row keeps at least its top token"
    assert not out.isnan().any()


@pytest.mark.parametrize("make", [PROCESSORS[0], PROCESSORS[1], PROCESSORS[4], PROCESSORS[5]])
@given(case=cases)
def test_top_k_and_min_p_are_idempotent(make, case):
    scores = random_scores(*case)
    proc = make()
    once = proc(ids(scores.shape[0]), scores)
    assert torch.equal(proc(ids(scores.shape[0]), once), once)


@given(case=cases, p=st.floats(0.0, 1.0))
def test_top_p_twice_is_hugging_faces_twice(case, p):
    """Top-p is not idempotent: renormalized, the kept head weighs more and can cut earlier.

    (Probabilities [0.45, 0.35, 0.2] at p = 0.5 keep two tokens, then one.) So the property is
    that a second pass still agrees with Hugging Face, and only ever removes more.
    """
    scores = random_scores(*case)
    b = scores.shape[0]
    once = SmallWindowTopP(p)(ids(b), scores)
    twice = SmallWindowTopP(p)(ids(b), once)
    ref = TopPLogitsWarper(p)
    assert torch.equal(removed(twice), removed(ref(ids(b), ref(ids(b), scores))))
    assert (removed(twice) | ~removed(once)).all()


def test_top_p_is_not_idempotent_in_general():
    scores = torch.tensor([[0.45, 0.35, 0.2]]).log()
    once = TopP(0.5)(ids(1), scores)
    assert (~removed(once)).sum() == 2 and (~removed(TopP(0.5)(ids(1), once))).sum() == 1


@pytest.mark.parametrize("make", PROCESSORS)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 4), v=st.integers(1, 200), c=st.integers(-8, 8))
def test_shift_invariance(make, seed, b, v, c):
    # Multiples of 1/64 in [-16, 16]: adding an integer is exact, so only the processor's own
    # arithmetic could tell the two apart.
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-1024, 1025, (b, v), generator=g).float() / 64
    proc = make()
    assert torch.equal(removed(proc(ids(b), scores)), removed(proc(ids(b), scores + c)))


@pytest.mark.parametrize("make", PROCESSORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF])
def test_dtypes_preserved_and_no_nan(make, dtype):
    scores = random_scores(3, 4, 500, "zipf", 0.2).to(dtype)
    out = make()(ids(4), scores)
    assert out.dtype == dtype and out.shape == scores.shape
    assert not out.isnan().any()
    kept = ~removed(out)
    assert torch.equal(out[kept], scores[kept])


@pytest.mark.parametrize("make", PROCESSORS)
def test_log_probs_give_the_same_kept_set_as_logits(make):
    """Beam search hands over log-probs: a per-row shift of the logits, up to rounding."""
    scores = random_scores(5, 4, 3000, "zipf", 0.0).double()
    log_probs = torch.log_softmax(scores, -1)
    proc = make()
    assert torch.equal(removed(proc(ids(4), scores)), removed(proc(ids(4), log_probs)))


# --------------------------------------------------------------------------------------------
# Fully masked rows and bad arguments


@pytest.mark.parametrize("make", PROCESSORS)
def test_fully_masked_row_raises_by_default(make):
    # A row that arrives with every token masked is named by the input policy (an earlier
    # processor emptied it); unchecked (on_nan="pass"), the masking policy still raises for it.
    scores = torch.randn(3, 10)
    scores[1] = NEG_INF
    with pytest.raises(ValueError, match=r"row 1 arrived with every token at -inf"):
        make()(ids(3), scores)
    unchecked = make()
    unchecked.on_nan = "pass"
    with pytest.raises(ValueError, match=r"masked every token in row\(s\) \[1\]"):
        unchecked(ids(3), scores)


@pytest.mark.parametrize("cls", [TopK, TopP, MinP])
def test_fully_masked_row_keeps_eos_on_request(cls):
    scores = torch.randn(3, 10)
    scores[1] = NEG_INF
    arg = 2 if cls is TopK else 0.5
    out = cls(arg, on_empty="keep_eos", eos_token_id=7)(ids(3), scores)
    assert (~removed(out[1])).nonzero().flatten().tolist() == [7]
    assert not out.isnan().any()


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: TopK(0), "k"),
        (lambda: TopK(-1), "k"),
        (lambda: TopK(1.5), "k"),
        (lambda: TopK(True), "k"),
        (lambda: TopK(5, min_tokens_to_keep=0), "min_tokens_to_keep"),
        (lambda: TopP(-0.1), "p"),
        (lambda: TopP(1.5), "p"),
        (lambda: TopP(math.nan), "p"),
        (lambda: TopP("0.9"), "p"),
        (lambda: TopP(0.9, min_tokens_to_keep=0), "min_tokens_to_keep"),
        (lambda: MinP(-0.1), "p"),
        (lambda: MinP(1.5), "p"),
        (lambda: MinP(math.nan), "p"),
        (lambda: MinP(0.1, min_tokens_to_keep=0), "min_tokens_to_keep"),
        (lambda: TopP(0.9, on_empty="keep_eos"), "eos_token_id"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make()
