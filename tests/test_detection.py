"""Attack detection without a model: the CUSUM, thresholds, the detector on synthetic statistics,
the perplexity baselines, the evaluation metrics, save/load, the shipped data sets.

Synthetic prompts are :class:`PromptStats` built from random per-token statistics: benign tokens
have surprisal ~ |N(2, 1.5)|, and a planted anomalous span has surprisal ~ N(13, 2) (what random
or optimized suffix tokens look like to SmolLM2). The detector must flag it and find its onset.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors.detection import Detector
from logit_processors.detection.baselines import PerplexityFilter, WindowedPerplexityFilter, window_means
from logit_processors.detection.datasets import ATTACK_SETS, load_attacks, load_benign
from logit_processors.detection.detector import (
    DEFAULT_WEIGHTS,
    POSITION_BUCKETS,
    conformal_threshold,
    cusum,
    cusum_span,
    position_buckets,
)
from logit_processors.detection.evaluation import Row, auroc, check_targets, roc_curve, threshold_at_fpr, tpr_at_fpr
from logit_processors.detection.prompt_stats import FEATURES, PromptStats
from logit_processors.gaps import GapStats
from logit_processors.runtime.prompts import EncodedPrompt

# --------------------------------------------------------------------------------------------
# Synthetic prompts


def synthetic(n: int, generator: torch.Generator, planted: tuple[int, int] | None = None) -> PromptStats:
    """A prompt of ``n`` user tokens (after 3 template tokens) with random benign-like statistics,
    and anomalous ones on ``planted`` (indices into the user tokens)."""
    surprisal = (2.0 + 1.5 * torch.randn(n, generator=generator)).abs()
    entropy = (2.5 + 1.0 * torch.randn(n, generator=generator)).abs()
    rank = torch.poisson(surprisal, generator=generator).long()
    if planted is not None:
        a, b = planted
        surprisal[a:b] = 13.0 + 2.0 * torch.randn(b - a, generator=generator)
        entropy[a:b] = 6.0 + torch.randn(b - a, generator=generator).abs()
        rank[a:b] = 5000
    chosen_gap = (surprisal - 1.0).clamp_min(0.0)
    top_gap = torch.rand(n, generator=generator) * 2
    stats = GapStats(top_gap, chosen_gap, surprisal, entropy, rank, torch.zeros(n, 5, dtype=torch.long),
                     torch.zeros(n, 5))
    ids = tuple(range(n + 3))
    encoded = EncodedPrompt(ids, (3, n + 3), text="x" * (n + 3), content="x" * n, content_char=3,
                            offsets=tuple((i, i + 1) for i in range(n + 3)))
    return PromptStats(encoded, torch.arange(3, n + 3), stats)


@pytest.fixture(scope="module")
def benign_fit():
    g = torch.Generator().manual_seed(0)
    return [synthetic(int(torch.randint(5, 40, (1,), generator=g)), g) for _ in range(300)]


@pytest.fixture(scope="module")
def detector(benign_fit):
    return Detector(refusal=None).fit_stats(benign_fit)


# --------------------------------------------------------------------------------------------
# CUSUM


def cusum_loop(x: list[float], drift: float) -> list[float]:
    s, out = 0.0, []
    for v in x:
        s = max(0.0, s + v - drift)
        out.append(s)
    return out


@given(st.lists(st.floats(-10, 10), min_size=0, max_size=60), st.floats(0, 3))
def test_cusum_equals_the_recursion(x, drift):
    got = cusum(torch.tensor(x, dtype=torch.float64), drift).tolist()
    assert got == pytest.approx(cusum_loop(x, drift), abs=1e-9)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=40), st.floats(0, 3))
def test_cusum_peak_is_the_best_segment_and_its_span(x, drift):
    """max S_t is the largest sum of x - drift over a contiguous span; cusum_span is such a span."""
    t = torch.tensor(x, dtype=torch.float64)
    curve = cusum(t, drift)
    best = max([0.0] + [sum(v - drift for v in x[a:b]) for a in range(len(x)) for b in range(a + 1, len(x) + 1)])
    assert float(curve.max()) == pytest.approx(best, abs=1e-9)
    span = cusum_span(curve)
    if best <= 0:
        assert span is None
    elif best > 1e-6:  # (a gain below rounding of the cumulative sum may not register)
        a, b = span
        assert sum(v - drift for v in x[a:b]) == pytest.approx(best, abs=1e-9)


def test_cusum_span_of_a_flat_curve_is_none():
    assert cusum_span(torch.zeros(5)) is None
    assert cusum_span(torch.zeros(0)) is None


def test_conformal_threshold():
    assert conformal_threshold(list(range(1, 201)), 0.01) == 199.0
    assert conformal_threshold([1.0, 2.0], 0.01) == math.inf  # too few scores for 1%
    with pytest.raises(ValueError, match="fpr"):
        conformal_threshold([1.0], 0.0)


def test_position_buckets():
    assert position_buckets(0).tolist() == []
    assert position_buckets(40).tolist()[:9] == [0, 1, 2, 2, 3, 3, 3, 3, 4]
    assert int(position_buckets(40).max()) == len(POSITION_BUCKETS) - 1


# --------------------------------------------------------------------------------------------
# The detector on synthetic statistics


@pytest.mark.parametrize("onset, length", [(5, 12), (20, 8), (0, 15), (30, 10)])
def test_planted_span_is_flagged_with_its_onset(detector, onset, length):
    g = torch.Generator().manual_seed(onset * 100 + length)
    n = onset + length + 5
    stats = synthetic(n, g, planted=(onset, onset + length))
    result = detector.score_stats(stats)
    assert result.flagged and result.score > result.threshold
    start, end = result.span_tokens
    assert abs(start - onset) <= 1, (start, onset)
    # The CUSUM peaks at the span's end, or a few benign tokens later when they happen to score
    # above the drift (the end estimate of a one-sided CUSUM can overshoot, never the onset by much).
    assert -1 <= end - (onset + length) <= 3
    # span is in prompt positions (3 template tokens first); the flagged tokens are the span's
    assert result.span == (start + 3, end + 3)
    assert result.flagged_positions.tolist() == list(range(start + 3, end + 3))
    assert result.span_chars == (start, end)  # one character per token in the synthetic text


def test_benign_prompts_are_flagged_at_about_the_target_rate(detector):
    g = torch.Generator().manual_seed(1)
    fresh = [synthetic(int(torch.randint(5, 40, (1,), generator=g)), g) for _ in range(400)]
    rate = sum(detector.score_stats(s).flagged for s in fresh) / len(fresh)
    assert rate <= 0.03  # target 1%; conformal: <= 1% in expectation


def test_token_scores_are_standardized_on_benign(benign_fit, detector):
    x = torch.cat([detector.token_scores(s) for s in benign_fit])
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_a_single_wild_token_is_not_enough(detector):
    g = torch.Generator().manual_seed(2)
    stats = synthetic(20, g, planted=(10, 11))
    assert not detector.score_stats(stats).flagged  # clipped: one token cannot decide alone


def test_detector_options_are_validated():
    with pytest.raises(ValueError, match="weights"):
        Detector(weights={"perplexity": 1.0})
    with pytest.raises(ValueError, match="weights"):
        Detector(weights={"surprisal": 0.0})
    with pytest.raises(ValueError, match="fpr"):
        Detector(fpr=1.5)
    with pytest.raises(ValueError, match="clip"):
        Detector(clip=0)
    with pytest.raises(ValueError, match="drift"):
        Detector(drift=math.nan)
    assert set(DEFAULT_WEIGHTS) <= set(FEATURES)


def test_unfitted_detector_and_too_few_prompts(benign_fit):
    with pytest.raises(ValueError, match="not fitted"):
        Detector(refusal=None).score_stats(benign_fit[0])
    with pytest.raises(ValueError, match="at least 99 prompts"):
        Detector(refusal=None).fit_stats(benign_fit[:20])
    assert Detector(refusal=None, fpr=0.1).fit_stats(benign_fit[:20]).fitted  # 10% needs only 9
    with pytest.raises(ValueError, match="no model"):
        Detector(refusal=None).fit_stats(benign_fit).score("hello")


def test_save_and_load_round_trip(tmp_path, detector, benign_fit):
    path = detector.save(tmp_path / "detector.json")
    data = json.loads(path.read_text())
    assert data["format"] == "logit_processors.detection.Detector" and data["model"] is None
    loaded = Detector.load(path, None, None)
    stats = synthetic(30, torch.Generator().manual_seed(3), planted=(10, 20))
    a, b = detector.score_stats(stats), loaded.score_stats(stats)
    assert (a.score, a.threshold, a.flagged, a.span) == (b.score, b.threshold, b.flagged, b.span)
    assert loaded.fit_scores == detector.fit_scores


def test_load_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a saved"):
        Detector.load(bad, None, None)


def test_load_refuses_a_detector_fitted_on_another_model(tmp_path, detector, tiny_gpt2):
    model, tokenizer = tiny_gpt2
    data = detector.to_dict()
    data["model"] = {"model_type": "llama", "vocab_size": 49152, "config_sha256": "0" * 64}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fitted on a different model"):
        Detector.load(path, model, tokenizer)


# --------------------------------------------------------------------------------------------
# Baselines


def test_window_means():
    assert window_means(torch.tensor([1.0, 1.0, 4.0, 4.0]), 2).tolist() == [1.0, 2.5, 4.0]
    assert window_means(torch.tensor([1.0, 3.0]), 10).tolist() == [2.0]  # shorter than a window: one mean


def test_baselines_on_synthetic_prompts(benign_fit):
    whole = PerplexityFilter().fit_stats(benign_fit)
    windowed = WindowedPerplexityFilter(window=5).fit_stats(benign_fit)
    stats = synthetic(60, torch.Generator().manual_seed(4), planted=(40, 50))
    w = windowed.score_stats(stats)
    assert w.flagged
    blamed = set(w.flagged_positions.tolist())
    assert blamed and blamed <= set(range(40 + 3 - 4, 50 + 3 + 4))  # windows that overlap the span
    p = whole.score_stats(stats)
    assert p.score == pytest.approx(float(stats.surprisal.mean()), rel=1e-6)
    assert p.flagged_positions.tolist() == stats.positions.tolist()  # blames every token
    with pytest.raises(ValueError, match="not fitted"):
        PerplexityFilter().score_stats(stats)
    with pytest.raises(ValueError, match="window"):
        WindowedPerplexityFilter(window=0)


# --------------------------------------------------------------------------------------------
# Evaluation metrics


def test_auroc_and_tpr_at_fpr():
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    benign = list(range(100))  # 1% of 100: one benign score may be above the threshold
    assert threshold_at_fpr(benign, 0.01) == 98
    assert tpr_at_fpr(benign, [98.5, 99.5, 50], 0.01) == pytest.approx(2 / 3)
    fpr, tpr = roc_curve([0, 1], [2, 3])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_targets_compare_the_detector_with_the_windowed_filter():
    def row(s, m, a, t):
        return Row(s, m, 10, 10, a, t, t, 0.0, 1.0, 1.0)

    checks = check_targets([row("random", "detector", 1.0, 1.0), row("random", "windowed perplexity", 0.9, 0.5),
                            row("fluent", "detector", 0.7, 0.1), row("fluent", "windowed perplexity", 0.8, 0.0)])
    verdicts = {c["target"].split(" (")[0]: c["pass"] for c in checks}
    assert verdicts["random: detector AUROC >= 0.99"] and verdicts["random: detector TPR@1%FPR >= 0.95"]
    assert not verdicts["fluent: detector AUROC >= windowed perplexity"]
    assert verdicts["fluent: detector TPR@1%FPR >= windowed perplexity"]


# --------------------------------------------------------------------------------------------
# The shipped data


def test_benign_splits_are_large_varied_and_disjoint():
    fit, held_out = load_benign("fit"), load_benign("eval")
    assert len(fit) >= 200 and len(held_out) >= 200
    assert not {p.text for p in fit} & {p.text for p in held_out}
    assert len({p.style for p in held_out}) >= 10
    lengths = sorted(len(p.text) for p in held_out)
    assert lengths[0] < 10 and lengths[-1] > 200
    with pytest.raises(ValueError, match="split"):
        load_benign("train")


@pytest.mark.parametrize("name", sorted(ATTACK_SETS))
def test_attack_sets_extend_held_out_requests(name):
    attacks = load_attacks(name)
    held_out = {p.id: p.text for p in load_benign("eval")}
    assert len(attacks) >= 20
    for a in attacks:
        assert held_out[a.base_id] == a.base and a.text == a.base + a.suffix and a.suffix.strip()
    with pytest.raises(ValueError, match="attack set"):
        load_attacks("gcg")
