"""Adaptive mixture weights (logit_processors.ensemble.adaptive) against a plain float64 reference.

The reference below is written independently of the module: a loop over spans, the posterior over
(switching rate, grid point) a dict of probabilities, each update spelled out (Bayes, then fixed
share within each rate). Hypothesis checks the invariants: weights on the simplex; a sequential
code (the length of span t does not depend on later spans, and the predictions over every possible
next outcome sum to 1); the regret bound over the best constant grid weight; identical members
give the members' own code length. A variant that lets span t into its own weight must fail.

Tolerances: everything is float64. One update is a few log-sum-exps over <= R * G = 105 terms,
each exact to a few ulps of the magnitudes involved (|log p| <= 60 here); over n spans the errors
add up, so totals are compared within ``n * 64 * eps * (1 + max |log p|)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logit_processors.ensemble.adaptive import RATES, AdaptiveMixture, simplex_grid

EPS = torch.finfo(torch.float64).eps


def tolerance(n: int, x: torch.Tensor) -> float:
    return n * 64 * EPS * (1 + float(x.abs().max()) if x.numel() else 1.0)


# --------------------------------------------------------------------------------------------
# The plain reference


def reference_grid(steps: int = 20) -> list[tuple[float, float]]:
    return [(k / steps, (steps - k) / steps) for k in range(steps, -1, -1)]


def reference_prior(grid, rates, center=None) -> dict:
    """Uniform over rates; over the grid uniform, or half uniform and half on ``center``'s nearest point."""
    start = [1 / len(grid)] * len(grid)
    if center is not None:
        total = sum(center)
        nearest = min(range(len(grid)), key=lambda j: sum(abs(g - c / total) for g, c in zip(grid[j], center)))
        start = [0.5 / len(grid) + (0.5 if j == nearest else 0.0) for j in range(len(grid))]
    return {(r, j): start[j] / len(rates) for r in range(len(rates)) for j in range(len(grid))}


def reference_update(posterior: dict, log_probs, grid, rates) -> tuple[dict, float]:
    """One span: the prediction (log-probability) and the posterior after Bayes and fixed share."""
    top = max(log_probs)
    scaled = [math.exp(x - top) for x in log_probs]  # p_i / max p
    expert = [sum(w * p for w, p in zip(point, scaled)) for point in grid]
    joint = {key: prob * expert[key[1]] for key, prob in posterior.items()}
    total = math.fsum(joint.values())
    prediction = math.log(total) + top
    shared = {}
    for r, rate in enumerate(rates):
        mass = math.fsum(joint[(r, j)] / total for j in range(len(grid)))
        for j in range(len(grid)):
            shared[(r, j)] = (1 - rate) * joint[(r, j)] / total + rate * mass / len(grid)
    return shared, prediction


def reference_weights(posterior: dict, grid) -> list[float]:
    return [math.fsum(prob * grid[j][i] for (_, j), prob in posterior.items()) for i in range(len(grid[0]))]


def reference_code_lengths(x: torch.Tensor, rates=RATES, center=None) -> tuple[list[float], list[float]]:
    grid = reference_grid()
    posterior = reference_prior(grid, rates, center)
    lengths = []
    for row in x.tolist():
        posterior, prediction = reference_update(posterior, row, grid, rates)
        lengths.append(-prediction)
    return lengths, reference_weights(posterior, grid)


def constant_code_length(x: torch.Tensor, w: torch.Tensor) -> float:
    """Code length (nats) of the constant mixture ``w``, plainly."""
    return -sum(math.log(sum(wi * math.exp(xi) for wi, xi in zip(w.tolist(), row))) for row in x.tolist())


class PeekingMixture(AdaptiveMixture):
    """Broken on purpose: span t's weight already knows span t (the update comes before the prediction)."""

    def code_lengths(self, span_log_probs, state=None):
        state = self.start() if state is None else state
        lengths = []
        for t in range(span_log_probs.shape[0]):
            row = span_log_probs[t : t + 1].double()
            state, _ = self.update(state, row)
            w = self.weights(state)[0]
            lengths.append(-float(torch.logsumexp(row[0] + w.log(), dim=0)))
        return torch.tensor(lengths, dtype=torch.float64), state


def log_prob_rows(n_max: int = 40, k: int = 2):
    cell = st.floats(min_value=-60.0, max_value=0.0, allow_nan=False)
    return st.integers(1, n_max).flatmap(
        lambda n: st.lists(st.lists(cell, min_size=k, max_size=k), min_size=n, max_size=n)
    ).map(lambda rows: torch.tensor(rows, dtype=torch.float64))


def assert_matches_reference(mixture: AdaptiveMixture, x: torch.Tensor, center=None) -> None:
    lengths, state = mixture.code_lengths(x)
    want, want_weights = reference_code_lengths(x, mixture.rates, center)
    torch.testing.assert_close(lengths, torch.tensor(want, dtype=torch.float64), atol=tolerance(len(x), x), rtol=0)
    torch.testing.assert_close(mixture.weights(state)[0], torch.tensor(want_weights, dtype=torch.float64),
                               atol=tolerance(len(x), x), rtol=0)


# --------------------------------------------------------------------------------------------
# Against the reference


@settings(max_examples=25, deadline=None)
@given(log_prob_rows())
def test_code_lengths_and_weights_match_the_plain_reference(x):
    assert_matches_reference(AdaptiveMixture(2), x)
    assert_matches_reference(AdaptiveMixture.centered_at([0.3, 0.7]), x, center=[0.3, 0.7])


def test_a_weight_that_sees_its_own_span_fails_the_reference():
    x = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [0.99, 0.01]], dtype=torch.float64).log()
    with pytest.raises(AssertionError):
        assert_matches_reference(PeekingMixture(2), x)


def predictions_over_outcomes(mixture, history: torch.Tensor, outcomes: torch.Tensor) -> float:
    """Sum over every possible next outcome (a row of ``outcomes``: each model's log-probability of
    it) of the code's probability of that outcome after ``history``: 1 for a proper sequential code."""
    total = 0.0
    for outcome in outcomes:
        lengths, _ = mixture.code_lengths(torch.cat([history, outcome[None]]))
        total += math.exp(-float(lengths[-1]))
    return total


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 12))
def test_predictions_are_a_distribution_over_the_next_outcome(seed, n):
    generator = torch.Generator().manual_seed(seed)
    # Three possible outcomes; each model's distribution over them, at every step.
    steps = torch.softmax(3 * torch.randn(n + 1, 3, 2, generator=generator, dtype=torch.float64), dim=1).log()
    picks = torch.randint(0, 3, (n,), generator=generator)
    history = steps[torch.arange(n), picks]
    assert predictions_over_outcomes(AdaptiveMixture(2), history, steps[n]) == pytest.approx(1.0, abs=1e-12)


def test_the_peeking_variant_is_not_a_code():
    outcomes = torch.tensor([[0.8, 0.1], [0.1, 0.8], [0.1, 0.1]], dtype=torch.float64).log()
    assert predictions_over_outcomes(PeekingMixture(2), outcomes[:0], outcomes) > 1.01


# --------------------------------------------------------------------------------------------
# Invariants


@settings(max_examples=25, deadline=None)
@given(log_prob_rows(k=3), st.integers(0, 2**31 - 1))
def test_weights_stay_on_the_simplex(x, seed):
    mixture = AdaptiveMixture(3, steps=6)
    state = mixture.start(2)
    for row in x:
        state, _ = mixture.update(state, torch.stack([row, row.flip(0)]))
        w = mixture.weights(state)
        assert bool((w >= 0).all())
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2, dtype=torch.float64), atol=mixture.n_grid * 8 * EPS,
                                   rtol=0)


@settings(max_examples=25, deadline=None)
@given(log_prob_rows(), log_prob_rows(), st.data())
def test_a_spans_length_does_not_depend_on_later_spans(x, other, data):
    t = data.draw(st.integers(0, len(x)))
    changed = torch.cat([x[:t], other])
    mixture = AdaptiveMixture(2)
    assert torch.equal(mixture.code_lengths(x)[0][:t], mixture.code_lengths(changed)[0][:t])


@settings(max_examples=25, deadline=None)
@given(log_prob_rows(), st.data())
def test_regret_over_the_best_constant_grid_weight_is_bounded(x, data):
    prior = data.draw(st.lists(st.floats(0, 1), min_size=21, max_size=21).filter(lambda p: sum(p) > 0))
    for mixture in (AdaptiveMixture(2), AdaptiveMixture(2, prior=prior)):
        total = float(mixture.code_lengths(x)[0].sum())
        best = min(constant_code_length(x, w) for w in mixture.grid)
        assert total <= best + mixture.regret_bound() + tolerance(len(x), x)
    assert AdaptiveMixture(2).regret_bound() == pytest.approx(math.log(5) + math.log(21))  # 4.65 nats
    assert AdaptiveMixture(2, prior=prior).regret_bound() == pytest.approx(math.log(10) + math.log(21))


@settings(max_examples=25, deadline=None)
@given(log_prob_rows(n_max=30, k=1))
def test_identical_members_code_like_either(x):
    both = torch.cat([x, x], dim=1)
    lengths, _ = AdaptiveMixture(2).code_lengths(both)
    torch.testing.assert_close(lengths, -x[:, 0], atol=tolerance(1, x), rtol=0)  # per span, no accumulation


def test_the_grid_the_fitted_prior_and_the_documents():
    assert simplex_grid(2, 20).shape == (21, 2) and simplex_grid(3, 20).shape == (231, 3)
    torch.testing.assert_close(simplex_grid(3, 4).sum(dim=1), torch.ones(15, dtype=torch.float64))
    x = torch.tensor([[0.9, 0.1]] * 200 + [[0.1, 0.9]] * 10, dtype=torch.float64).log()
    fitted = AdaptiveMixture.fitted(x)
    assert fitted.prior.argmax() == 0 and float(fitted.prior.sum()) == pytest.approx(1.0)
    lengths, _ = fitted.code_lengths(x)
    total, final = fitted.score_documents([x, x[:5]])
    assert total == pytest.approx(float(lengths.sum()) + float(fitted.code_lengths(x[:5])[0].sum()))
    assert final[0][0] < 0.5  # switching followed the last 10 spans
    assert final[1][0] > 0.9  # the second document starts again from the prior


@pytest.mark.parametrize("make, fragment", [
    (lambda: AdaptiveMixture(0), "n_models must be a positive integer"),
    (lambda: AdaptiveMixture(2, steps=0), "steps must be a positive integer"),
    (lambda: AdaptiveMixture(2, rates=[0.0, 1.0]), r"rates\[1\] must be a number in \[0, 1\)"),
    (lambda: AdaptiveMixture(2, rates=[]), "rates must hold at least one"),
    (lambda: AdaptiveMixture(2, prior=[1.0, 2.0]), "prior must be 21 finite non-negative numbers"),
    (lambda: AdaptiveMixture.centered_at([-1.0, 2.0]), "weights must be >= 0"),
    (lambda: AdaptiveMixture(2).code_lengths(torch.zeros(3, 3)), r"span_log_probs must be a \[spans, 2\] tensor"),
    (lambda: AdaptiveMixture(2).code_lengths(torch.ones(3, 2)), "must be log-probabilities"),
])
def test_bad_arguments_name_themselves(make, fragment):
    with pytest.raises(ValueError, match=fragment):
        make()
