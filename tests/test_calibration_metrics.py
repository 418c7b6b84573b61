"""Calibration metrics: ECE (equal-width and equal-mass), top-label Brier, NLL, reliability diagrams.

Each metric is checked against an independent, deliberately naive implementation (Python loops
over the definitions), and equal-width ECE against torchmetrics when it is installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors.calibration.diagrams import plot_reliability
from logit_processors.calibration.metrics import (
    Predictions,
    expected_calibration_error,
    reliability_bins,
    top_label_brier,
)


def naive_ece(confidence: list[float], correct: list[bool], n_bins: int, binning: str) -> float:
    """ECE straight from the definitions, one prediction at a time."""
    n = len(confidence)
    if binning == "width":
        members = [[] for _ in range(n_bins)]
        for c, ok in zip(confidence, correct, strict=True):
            b = 0
            while b < n_bins - 1 and not (c <= (b + 1) / n_bins):  # bins ((b)/M, (b+1)/M]
                b += 1
            members[b].append((c, ok))
    else:
        ranked = sorted(zip(confidence, correct, strict=True), key=lambda pair: pair[0])
        sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
        members, start = [], 0
        for size in sizes:
            members.append(ranked[start : start + size])
            start += size
    total = 0.0
    for group in members:
        if group:
            accuracy = sum(ok for _, ok in group) / len(group)
            mean_confidence = sum(c for c, _ in group) / len(group)
            total += len(group) / n * abs(accuracy - mean_confidence)
    return total


def random_predictions(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    confidence = torch.rand(n, generator=g, dtype=torch.float64) ** 0.5
    correct = torch.rand(n, generator=g, dtype=torch.float64) < confidence * 0.9
    return confidence, correct


@pytest.mark.parametrize("binning", ["width", "mass"])
@pytest.mark.parametrize(("n", "n_bins"), [(1000, 15), (37, 15), (7, 15), (500, 1), (200, 10)])
def test_ece_matches_the_definition(binning, n, n_bins):
    confidence, correct = random_predictions(n, seed=n + n_bins)
    ours = expected_calibration_error(confidence, correct, n_bins, binning)
    assert ours == pytest.approx(naive_ece(confidence.tolist(), correct.tolist(), n_bins, binning), abs=1e-12)


@given(st.lists(st.tuples(st.sampled_from([0.0, 1 / 15, 0.2, 0.5, 14 / 15, 1.0, 0.3]), st.booleans()), min_size=1,
                max_size=40))
def test_ece_on_bin_edges_and_ties(pairs):
    # Confidences exactly on the edges k/15 go to the bin they close (right-closed, Guo et al.).
    confidence = [c for c, _ in pairs]
    correct = [ok for _, ok in pairs]
    for binning in ("width", "mass"):
        ours = expected_calibration_error(torch.tensor(confidence, dtype=torch.float64), torch.tensor(correct), 15, binning)
        assert ours == pytest.approx(naive_ece(confidence, correct, 15, binning), abs=1e-12)


def test_ece_extremes():
    ones = torch.ones(10, dtype=torch.float64)
    assert expected_calibration_error(ones, torch.ones(10, dtype=torch.bool)) == 0.0
    assert expected_calibration_error(ones, torch.zeros(10, dtype=torch.bool)) == 1.0
    # Perfectly calibrated: confidence 0.5, half right. (Equal-mass bins split tied confidences
    # into bins of 1 here, each off by 0.5: ties are cut wherever the counts say.)
    half = torch.full((10,), 0.5, dtype=torch.float64)
    assert expected_calibration_error(half, torch.arange(10) % 2 == 0) == pytest.approx(0.0)
    assert expected_calibration_error(half, torch.arange(10) % 2 == 0, 1, "mass") == pytest.approx(0.0)
    assert expected_calibration_error(half, torch.arange(10) % 2 == 0, 10, "mass") == pytest.approx(0.5)
    assert math.isnan(expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool)))


def test_equal_width_ece_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    confidence, correct = random_predictions(5000, seed=3)
    expected = tm.binary_calibration_error(confidence.float(), correct.long(), n_bins=15, norm="l1")
    assert expected_calibration_error(confidence, correct, 15, "width") == pytest.approx(float(expected), abs=1e-6)


def test_reliability_bins_fields():
    confidence = torch.tensor([0.05, 0.1, 0.55, 0.6, 0.95], dtype=torch.float64)
    correct = torch.tensor([False, True, True, False, True])
    bins = reliability_bins(confidence, correct, n_bins=2)
    assert bins.count.tolist() == [2, 3]
    assert bins.accuracy.tolist() == pytest.approx([0.5, 2 / 3])
    assert bins.confidence.tolist() == pytest.approx([0.075, 0.7])
    assert bins.lower.tolist() == [0.0, 0.5] and bins.upper.tolist() == [0.5, 1.0]
    mass = reliability_bins(confidence, correct, n_bins=2, binning="mass")
    assert mass.count.tolist() == [3, 2]
    assert mass.lower.tolist() == pytest.approx([0.05, 0.6]) and mass.upper.tolist() == pytest.approx([0.55, 0.95])
    empty = reliability_bins(torch.tensor([0.9]), torch.tensor([True]), n_bins=3)
    assert empty.count.tolist() == [0, 0, 1] and math.isnan(float(empty.accuracy[0]))


def test_brier_matches_the_definition():
    confidence, correct = random_predictions(300, seed=5)
    expected = sum((c - float(ok)) ** 2 for c, ok in zip(confidence.tolist(), correct.tolist(), strict=True)) / 300
    assert top_label_brier(confidence, correct) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_predictions_from_logits_match_float64(temperature):
    g = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(64, 100, generator=g)
    logits[0, 3] = float("-inf")  # a masked token
    labels = torch.randint(0, 100, (64,), generator=g)
    labels[0] = 4
    p = Predictions.from_logits(logits, labels, temperature)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    assert torch.allclose(p.confidence, probs.max(-1).values, rtol=1e-5)
    assert torch.equal(p.correct, probs.argmax(-1) == labels)
    assert torch.allclose(p.nll, -probs.gather(1, labels[:, None]).squeeze(1).log(), rtol=1e-5, atol=1e-5)
    summary = p.summary()
    assert set(summary) == {"nll", "ece_width", "ece_mass", "brier", "accuracy", "confidence", "positions"}
    assert summary["positions"] == 64


def test_predictions_concat_and_half_precision():
    logits = torch.randn(10, 20).to(torch.bfloat16)
    labels = torch.randint(0, 20, (10,))
    p = Predictions.from_logits(logits, labels)
    assert p.confidence.dtype == torch.float64 and len(p) == 10
    both = Predictions.concat([p, p])
    assert len(both) == 20 and torch.equal(both.correct[:10], p.correct)
    assert len(Predictions.concat([])) == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(torch.tensor([0.5]), torch.tensor([True]), n_bins=0)
    with pytest.raises(ValueError, match="binning"):
        reliability_bins(torch.tensor([0.5]), torch.tensor([True]), binning="quantile")
    with pytest.raises(ValueError, match="must match"):
        expected_calibration_error(torch.tensor([0.5, 0.4]), torch.tensor([True]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        top_label_brier(torch.tensor([1.5]), torch.tensor([True]))
    with pytest.raises(ValueError, match="labels"):
        Predictions.from_logits(torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        Predictions.from_logits(torch.randn(4), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_reliability_diagram_png(tmp_path, binning):
    pytest.importorskip("matplotlib")
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(500, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 2, -1), 1, generator=g).squeeze(1)
    path = tmp_path / "reliability.png"
    figure = plot_reliability(
        {"T = 1": Predictions.from_logits(logits, labels), "T = 2": Predictions.from_logits(logits, labels, 2.0)},
        path, binning=binning, title="synthetic",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 4
    with pytest.raises(ValueError, match="at least one"):
        plot_reliability({})
