"""Ensembling: the combine math (property tests against float64 references, masks, no NaN), the
cached member runner against full recomputation, and argument checking.

generate() integration against a slow reference model is in test_ensemble_generate.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from real_models import require_named_model

from logit_processors import ContrastiveDecoding, LogOddsEnsemble, numerics
from logit_processors.ensemble import check_same_vocabulary, combine_log_probs
from logit_processors.ensemble.combine import temperature_value
from logit_processors.runtime.members import CachedMembers

NEG_INF = float("-inf")
finite = st.floats(min_value=-40, max_value=40, allow_nan=False, width=32)
weight = st.one_of(st.just(0.0), st.floats(min_value=-2, max_value=2, allow_nan=False))


@st.composite
def score_rows(draw, n_models=None, masked=True, min_width=2, max_width=12):
    """``n`` score tensors [1, V] of one width, entries finite or (some) -inf."""
    n = draw(st.integers(1, 3)) if n_models is None else n_models
    width = draw(st.integers(min_width, max_width))
    entry = st.one_of(finite, finite, st.just(NEG_INF)) if masked else finite
    return [torch.tensor([draw(st.lists(entry, min_size=width, max_size=width))]) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Float64 references


def ref_log_softmax(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    if not torch.isfinite(z).any():
        return torch.full_like(z, NEG_INF)
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


def ref_log_odds(z: torch.Tensor) -> torch.Tensor:
    """z_i - logsumexp_{j != i} z_j, one entry at a time, in float64."""
    z = z.double()[0]
    out = []
    for i in range(z.shape[0]):
        others = torch.cat([z[:i], z[i + 1 :]])
        rest = torch.logsumexp(others, 0) if torch.isfinite(others).any() else torch.tensor(NEG_INF, dtype=torch.float64)
        if z[i] == NEG_INF:
            out.append(NEG_INF)
        elif rest == NEG_INF:
            out.append(math.inf)
        else:
            out.append(float(z[i] - rest))
    return torch.tensor([out], dtype=torch.float64)


def ref_combine(scores, weights, combine, prior=None) -> torch.Tensor:
    """The documented formula, entry by entry, with the documented mask rules, in float64."""
    evidence = ref_log_softmax if combine == "logprob" else ref_log_odds
    terms = [(evidence(s), w) for s, w in zip(scores, weights, strict=True) if w != 0]
    if prior is not None and 1 - math.fsum(weights) != 0:
        terms.append((evidence(prior), 1 - math.fsum(weights)))
    width = scores[0].shape[-1]
    total = torch.zeros(1, width, dtype=torch.float64)
    for j in range(width):
        values = [float(t[0, j]) for t, _ in terms]
        if any(v == NEG_INF for v in values):
            total[0, j] = NEG_INF
        else:
            total[0, j] = sum(w * (0.0 if v == math.inf else v) for v, (_, w) in zip(values, terms, strict=True))
    if combine == "logodds":
        total = torch.nn.functional.logsigmoid(total)
    return ref_log_softmax(total)


def assert_matches(got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    assert not torch.isnan(got).any()
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)), (got, want)
    both = torch.isfinite(want)
    torch.testing.assert_close(got[both].double(), want[both], atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# numerics: log-odds and the masked weighted sum


@given(score_rows(n_models=1))
def test_log_odds_of_scores_matches_float64_and_never_nan(rows):
    [z] = rows
    got = numerics.log_odds_of_scores(z)
    want = ref_log_odds(z)
    assert not torch.isnan(got).any()
    assert torch.equal(torch.isposinf(got), torch.isposinf(want)) and torch.equal(torch.isneginf(got), torch.isneginf(want))
    both = torch.isfinite(want)
    torch.testing.assert_close(got[both].double(), want[both], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("gap", [10.0, 20.0, 40.0, 80.0])
def test_log_odds_of_a_nearly_certain_token_are_exact(gap):
    # p = 1 / (1 + 2 e^-gap): float32 rounds p to 1 beyond gap ~ 17, but the log-odds are gap - log 2.
    z = torch.tensor([[gap, 0.0, 0.0]])
    got = numerics.log_odds_of_scores(z)
    assert got[0, 0].item() == pytest.approx(gap - math.log(2), rel=1e-6)
    assert got[0, 1].item() == pytest.approx(-numerics.logsumexp(torch.tensor([gap, 0.0])).item(), rel=1e-6)


def test_log_odds_of_scores_edge_rows():
    z = torch.tensor([[0.0, NEG_INF, NEG_INF], [NEG_INF] * 3, [1.0, 1.0, NEG_INF]])
    got = numerics.log_odds_of_scores(z)
    assert got[0].tolist() == [math.inf, NEG_INF, NEG_INF]
    assert got[1].tolist() == [NEG_INF] * 3
    assert got[2, :2].tolist() == [0.0, 0.0] and got[2, 2] == NEG_INF
    assert numerics.log_odds_of_scores(z.half()).dtype == torch.float32


@given(score_rows(), st.lists(weight, min_size=3, max_size=3))
def test_masked_weighted_sum_rules(rows, weights):
    weights = weights[: len(rows)]
    if all(w == 0 for w in weights):
        with pytest.raises(ValueError, match="every weight is 0"):
            numerics.masked_weighted_sum(rows, weights)
        return
    got = numerics.masked_weighted_sum(rows, weights)
    assert not torch.isnan(got).any() and not torch.isposinf(got).any()
    masked = torch.zeros_like(got, dtype=torch.bool)
    for r, w in zip(rows, weights, strict=True):
        if w != 0:
            masked |= torch.isneginf(r)
    assert torch.equal(torch.isneginf(got), masked)
    want = sum(w * r.double() for r, w in zip(rows, weights, strict=True) if w != 0)
    torch.testing.assert_close(got[~masked].double(), want[~masked], atol=1e-3, rtol=1e-5)


def test_masked_weighted_sum_counts_plus_infinity_as_zero_and_keeps_nan():
    a = torch.tensor([[math.inf, NEG_INF]])
    b = torch.tensor([[math.inf, 2.0]])
    assert numerics.masked_weighted_sum([a, b], [1.0, -1.0]).tolist() == [[0.0, NEG_INF]]
    assert math.isnan(numerics.masked_weighted_sum([torch.tensor([[math.nan]])], [1.0]).item())
    with pytest.raises(ValueError, match="2 terms but 1 weights"):
        numerics.masked_weighted_sum([a, b], [1.0])


# --------------------------------------------------------------------------------------------
# combine_log_probs: the ensemble math


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
@given(data=st.data())
def test_combine_matches_the_float64_formula_with_masks(combine, data):
    rows = data.draw(score_rows())
    weights = data.draw(st.lists(weight, min_size=len(rows), max_size=len(rows)))
    if all(w == 0 for w in weights):
        weights[0] = 1.0
    prior = data.draw(st.one_of(st.none(), score_rows(n_models=1, masked=False, min_width=rows[0].shape[-1],
                                                      max_width=rows[0].shape[-1])))
    prior = prior[0] if prior is not None else None
    got = combine_log_probs(rows, weights, combine, prior=prior)
    want = ref_combine(rows, weights, combine, prior=prior)
    assert got.dtype == torch.float32
    assert_matches(got, want, atol=1e-4)  # float32 rounding of log-scores up to ~250 in magnitude
    # Normalized, unless every token is masked (then all -inf, never NaN).
    lse = torch.logsumexp(got.double(), dim=-1)
    assert lse.item() == NEG_INF or abs(lse.item()) < 1e-4


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
@given(rows=score_rows(n_models=2), shifts=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2),
       weights=st.lists(st.floats(0.1, 2), min_size=2, max_size=2))
def test_combine_is_shift_invariant_per_model(combine, rows, shifts, weights):
    # Raw logits and log-probs (what beam search hands processors) combine identically.
    shifted = [r.double() + s for r, s in zip(rows, shifts, strict=True)]
    base = combine_log_probs([r.double() for r in rows], weights, combine)
    torch.testing.assert_close(combine_log_probs(shifted, weights, combine), base, atol=1e-6, rtol=0)


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
@given(rows=score_rows(n_models=1))
def test_combine_identities(combine, rows):
    [z] = rows
    alone = numerics.log_softmax(z)
    # One model with weight 1, or weights (1, 0), or the same model twice at (0.5, 0.5): the model.
    for scores, weights in (([z], [1.0]), ([z, torch.randn_like(z)], [1.0, 0.0]), ([z, z], [0.5, 0.5])):
        got = combine_log_probs(scores, weights, combine)
        assert torch.equal(torch.isneginf(got), torch.isneginf(alone))
        torch.testing.assert_close(got[torch.isfinite(got)], alone[torch.isfinite(alone)], atol=1e-4, rtol=0)


def test_temperatures_divide_each_models_logits():
    z1, z2 = torch.randn(2, 50), torch.randn(2, 50)
    got = combine_log_probs([z1, z2], [1.0, 0.5], temperatures=[0.5, 2.0])
    want = torch.log_softmax(torch.log_softmax(z1 / 0.5, -1) + 0.5 * torch.log_softmax(z2 / 2.0, -1), -1)
    torch.testing.assert_close(got, want)


def test_logodds_with_a_prior_multiplies_odds_relative_to_the_prior():
    """Two calibrated, independent forecasters of a binary event: posterior odds = o1 * o2 / o_prior."""
    p1, p2, prior = 0.8, 0.7, 0.6
    binary = [torch.tensor([[math.log(p), math.log(1 - p)]]) for p in (p1, p2, prior)]
    got = combine_log_probs(binary[:2], [1.0, 1.0], "logodds", prior=binary[2]).exp()
    odds = (p1 / (1 - p1)) * (p2 / (1 - p2)) / (prior / (1 - prior))
    assert got[0, 0].item() == pytest.approx(odds / (1 + odds), rel=1e-6)


def test_fully_masked_rows_stay_masked_without_nan():
    z = torch.full((2, 4), NEG_INF)
    z[1, 2] = 0.0
    for combine in ("logprob", "logodds"):
        got = combine_log_probs([z, z.clone()], [1.0, -0.5], combine)
        assert torch.isneginf(got[0]).all() and got[1, 2] == 0 and not torch.isnan(got).any()


def test_combine_argument_errors():
    z = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_log_probs([z], [1.0], "mean")
    with pytest.raises(ValueError, match="1 score tensors but 2 weights"):
        combine_log_probs([z], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 temperatures"):
        combine_log_probs([z], [1.0], temperatures=[1.0, 1.0])
    with pytest.raises(ValueError, match="at least one weight"):
        combine_log_probs([z], [0.0])


# --------------------------------------------------------------------------------------------
# The cached member runner against full recomputation


@pytest.fixture(scope="module")
def tiny(tiny_gpt2):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_gpt2
    torch.set_num_threads(threads)


def full_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]


# Two forward paths of the tiny GPT-2 (a cached step or a last-position LM head against a full
# forward: other matmul shapes, so other BLAS blocking) give float32 logits (|z| <= ~10, inner
# dimensions 64..256) that differ by ~sqrt(k) eps |z| ~ 1e-5 (3e-6 measured on one CPU), and
# log-probs by up to twice that. A wrong cache row or position moves them by O(1).
PATHS_ATOL = 5e-5


def test_cached_members_follow_arbitrary_row_moves(tiny):
    """Random parents each step (beam-like moves, duplicated rows, a shrinking batch): the cached
    logits equal a full recomputation of every row's history."""
    model, tokenizer = tiny
    g = torch.Generator().manual_seed(0)
    batch = tokenizer(["The if statement", "x", "Exceptions are raised"], return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    runner = CachedMembers([model, model], pad_token_id=tokenizer.pad_token_id)
    for step in range(10):
        first, second = runner.next_token_logits(ids)
        want = full_logits(model, ids, mask)
        torch.testing.assert_close(first, want, atol=PATHS_ATOL, rtol=0)
        torch.testing.assert_close(second, want, atol=PATHS_ATOL, rtol=0)
        rows = ids.shape[0] if step != 5 else ids.shape[0] - 1  # one step drops a row
        parents = torch.randint(0, ids.shape[0], (rows,), generator=g)
        new = torch.randint(0, len(tokenizer), (rows, 1), generator=g)
        ids = torch.cat([ids[parents], new], dim=1)
        mask = torch.cat([mask[parents], torch.ones(rows, 1, dtype=torch.long)], dim=1)
    assert runner.counts["prefill"] == 1 and runner.counts["continue"] == 9 and runner.counts["reorder"] > 0


def test_cached_members_start_over_when_the_history_does_not_continue(tiny):
    model, tokenizer = tiny
    runner = CachedMembers([model], pad_token_id=tokenizer.pad_token_id)
    a = tokenizer(["The if statement is"], return_tensors="pt")["input_ids"]
    b = tokenizer(["Exceptions are"], return_tensors="pt")["input_ids"]
    for ids in (a, a[:, :-1], b, torch.cat([b, b], dim=0), a):  # shorter, other, batch change, back
        [got] = runner.next_token_logits(ids)
        torch.testing.assert_close(got, full_logits(model, ids, torch.ones_like(ids)), atol=PATHS_ATOL, rtol=0)
    assert runner.counts == {"prefill": 5, "continue": 0, "reorder": 0}
    runner.reset()
    assert runner._caches == []


def test_padding_is_inferred_from_the_leading_pad_run_only(tiny):
    model, tokenizer = tiny
    pad = tokenizer.pad_token_id
    runner = CachedMembers([model], pad_token_id=pad)
    ids = torch.tensor([[pad, pad, 5, pad, 7], [pad, pad, pad, pad, pad]])
    assert runner._prompt_mask(ids).tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert CachedMembers([model])._prompt_mask(ids).tolist() == [[1] * 5] * 2  # no pad id: no padding


def test_cached_members_argument_errors(tiny):
    model, _ = tiny
    with pytest.raises(TypeError, match="must be a Hugging Face causal LM"):
        CachedMembers([object()])
    runner = CachedMembers([model])
    with pytest.raises(ValueError, match="attention_mask must be a"):
        runner.set_attention_mask(torch.ones(3))


# --------------------------------------------------------------------------------------------
# The processors: arguments, vocabularies, direct calls


class FakeTokenizer:
    def __init__(self, vocab: dict[str, int], special: dict[int, str] | None = None, pad_token_id=None):
        self.vocab = vocab
        self.added_tokens_decoder = {i: _Added(t) for i, t in (special or {}).items()}
        self.pad_token_id = pad_token_id

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self):
        return len(self.vocab)


class _Added(str):
    special = True


def test_vocabulary_check():
    vocab = {"a": 0, "b": 1, "<eos>": 2}
    check_same_vocabulary([FakeTokenizer(vocab), FakeTokenizer(dict(vocab))], ["x", "y"])
    with pytest.raises(ValueError, match=r"y's tokenizer does not map tokens to the same ids as x's .*'a': 0 vs 1"):
        check_same_vocabulary([FakeTokenizer(vocab), FakeTokenizer({"a": 1, "b": 0, "<eos>": 2})], ["x", "y"])
    with pytest.raises(ValueError, match="different special tokens"):
        check_same_vocabulary([FakeTokenizer(vocab, {2: "<eos>"}), FakeTokenizer(vocab, {})], ["x", "y"])


def test_processor_argument_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="weights must have 2 entries"):
        LogOddsEnsemble(model, [1.0])
    with pytest.raises(ValueError, match="weights must be finite"):
        LogOddsEnsemble(model, [1.0, math.nan])
    with pytest.raises(ValueError, match="at least one weight must be nonzero"):
        LogOddsEnsemble(model, [0, 0])
    with pytest.raises(ValueError, match="combine must be one of"):
        LogOddsEnsemble(model, [1, 1], combine="sum")
    with pytest.raises(ValueError, match="temperatures must have 2 entries"):
        LogOddsEnsemble(model, [1, 1], temperatures=[1.0])
    with pytest.raises(ValueError, match=r"temperatures\[1\] must be a positive"):
        LogOddsEnsemble(model, [1, 1], temperatures=[1.0, -2.0])
    with pytest.raises(ValueError, match="prior must be None, a causal LM, or a"):
        LogOddsEnsemble(model, [1, 1], prior=torch.ones(2, 3))
    with pytest.raises(ValueError, match="non-negative probabilities"):
        LogOddsEnsemble(model, [1, 1], prior=torch.tensor([0.5, -0.1]))
    with pytest.raises(TypeError, match="member #0 must be a Hugging Face causal LM"):
        LogOddsEnsemble(["gpt2"], [1, 1])
    with pytest.raises(ValueError, match="members must contain at least one model"):
        LogOddsEnsemble([], [1])
    with pytest.raises(ValueError, match="a list of 2"):
        LogOddsEnsemble(model, [1, 1], tokenizer=[tokenizer])
    with pytest.raises(ValueError, match="LM head has 2048 columns but the tokenizer has 3000"):
        LogOddsEnsemble(model, [1, 1], tokenizer=FakeTokenizer({str(i): i for i in range(3000)}))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        ContrastiveDecoding(model, alpha=-1)
    with pytest.raises(ValueError, match="plausibility must be a number in"):
        ContrastiveDecoding(model, plausibility=1.5)


def test_temperatures_accept_calibration_objects():
    class Fitted:
        temperature = 1.7

    assert temperature_value("t", Fitted()) == 1.7
    assert temperature_value("t", torch.tensor(0.5)) == 0.5
    with pytest.raises(ValueError, match="t must be a positive"):
        temperature_value("t", "hot")


def test_direct_calls_mask_lm_head_padding_and_never_write_the_input(tiny):
    model, tokenizer = tiny
    n = len(tokenizer)
    ids = tokenizer(["The if statement"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        scores = model(ids).logits[:, -1]
    before = scores.clone()
    for processor in (LogOddsEnsemble(model, [0.5, 0.5], tokenizer=tokenizer),
                      LogOddsEnsemble(model, [0.5, 0.5]),  # no tokenizer: the full (equal) widths
                      ContrastiveDecoding(model, alpha=0.0, plausibility=0.0, tokenizer=tokenizer)):
        out = processor(ids, scores)
        assert torch.equal(scores, before) and out is not scores
        width = n if processor.n_tokens else scores.shape[-1]
        # The member (the same model) runs through CachedMembers, the scores through a full forward.
        torch.testing.assert_close(out[:, :width], torch.log_softmax(scores[:, :width], -1), atol=PATHS_ATOL, rtol=0)
        assert torch.isneginf(out[:, width:]).all()


def test_contrastive_plausibility_keeps_the_expert_head(tiny):
    model, tokenizer = tiny
    ids = tokenizer(["The if statement"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        scores = model(ids).logits[:, -1]
    log_p = torch.log_softmax(scores[:, : len(tokenizer)], -1)
    out = ContrastiveDecoding(model, alpha=1.0, plausibility=0.05, tokenizer=tokenizer)(ids, scores)
    kept = torch.isfinite(out[:, : len(tokenizer)])
    assert torch.equal(kept, log_p >= log_p.max() + math.log(0.05))
    assert torch.allclose(out[:, : len(tokenizer)][kept], torch.zeros(()), atol=1e-4)  # same model twice: 0
    top_only = ContrastiveDecoding(model, plausibility=1.0, tokenizer=tokenizer)(ids, scores)
    assert torch.isfinite(top_only).sum() == 1


def test_a_row_emptied_by_the_ensemble_is_an_error(tiny):
    model, tokenizer = tiny
    ids = tokenizer(["The if statement"], return_tensors="pt")["input_ids"]
    scores = torch.full((1, model.config.vocab_size), NEG_INF)
    scores[0, 7] = 0.0  # an earlier processor allowed only token 7
    prior = torch.ones(len(tokenizer))
    prior[7] = 0.0  # and the prior rules it out
    ensemble = LogOddsEnsemble(model, [1.0, 0.5], prior=prior, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"LogOddsEnsemble left no token in row\(s\) \[0\]"):
        ensemble(ids, scores)
    scores[0, 7] = NEG_INF  # already empty before: the input policy names it (not this processor's doing)
    with pytest.raises(ValueError, match=r"LogOddsEnsemble: row 0 arrived with every token at -inf"):
        ensemble(ids, scores)
    ensemble.on_nan = "pass"  # unchecked, it is passed through
    assert torch.isneginf(ensemble(ids, scores)).all()


def test_repr(tiny):
    model, _ = tiny
    assert repr(LogOddsEnsemble(model, [1, 0.5], "logodds", temperatures=[1, 2])) == (
        "LogOddsEnsemble(members=1, weights=[1.0, 0.5], combine='logodds', temperatures=[1.0, 2.0])"
    )
    assert repr(ContrastiveDecoding(model, alpha=0.5)) == (
        "ContrastiveDecoding(alpha=0.5, plausibility=0.1, amateur_temperature=1.0)"
    )


@pytest.mark.real_model
def test_smollm2_and_the_tiny_gpt2_tokenizers_are_aligned_on_text(tiny):
    from logit_processors.ensemble.combine import tokenizer_relation
    from logit_processors.models import load

    require_named_model("smollm2")
    model, tokenizer = tiny
    _, smol_tokenizer = load("smollm2", progress=False)
    assert tokenizer_relation(smol_tokenizer, tokenizer) == "aligned"
    with pytest.raises(ValueError, match="does not map tokens to the same ids"):  # id by id: refused
        check_same_vocabulary([smol_tokenizer, tokenizer], ["SmolLM2", "the tiny GPT-2"])
