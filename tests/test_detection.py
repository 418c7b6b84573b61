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
from logit_processors.detection.baselines import PerplexityFilter, WindowedPerplexityFilter
from logit_processors.detection.datasets import (
    ATTACK_SETS,
    BENIGN_FILES,
    CATEGORIES,
    SPLIT_SHARES,
    SPLITS,
    data_path,
    load_attacks,
    load_benign,
    read_prompts,
    split_of,
)
from logit_processors.detection.detector import (
    DEFAULT_WEIGHTS,
    POSITION_BUCKETS,
    conformal_threshold,
    cusum,
    cusum_span,
    position_buckets,
    repeat_units,
)
from logit_processors.detection.evaluation import Row, auroc, check_targets, roc_curve, threshold_at_fpr, tpr_at_fpr
from logit_processors.detection.prompt_stats import FEATURES, PromptStats, stats_from_logits
from logit_processors.detection.sequential import longest_run, window_means
from logit_processors.gaps import GapStats
from logit_processors.runtime.prompts import EncodedPrompt

# --------------------------------------------------------------------------------------------
# Synthetic prompts


def synthetic(n: int, generator: torch.Generator, planted: tuple[int, int] | None = None,
              hidden_shift: float = 0.0) -> PromptStats:
    """A prompt of ``n`` user tokens (after 3 template tokens) with random benign-like statistics
    (surprisal drawn around the entropy with the varentropy's spread, as for text the model
    predicts well), anomalous ones on ``planted`` (indices into the user tokens), and an
    8-dimensional hidden state ~ N(hidden_shift, 1)."""
    entropy = (2.5 + 1.0 * torch.randn(n, generator=generator)).abs()
    varentropy = (2.0 + 0.7 * torch.randn(n, generator=generator)).abs()
    surprisal = (entropy + varentropy.sqrt() * torch.randn(n, generator=generator)).abs()
    if planted is not None:
        a, b = planted
        surprisal[a:b] = 13.0 + 2.0 * torch.randn(b - a, generator=generator)
        entropy[a:b] = 6.0 + torch.randn(b - a, generator=generator).abs()
    rank = torch.poisson(surprisal, generator=generator).long()
    if planted is not None:
        rank[planted[0] : planted[1]] = 5000
    p = torch.exp(-surprisal)
    mass_above = torch.rand(n, generator=generator) * (1 - p)
    if planted is not None:
        mass_above[planted[0] : planted[1]] = 1 - p[planted[0] : planted[1]] - 1e-4
    chosen_gap = (surprisal - 1.0).clamp_min(0.0)
    top_gap = torch.rand(n, generator=generator) * 2
    stats = GapStats(top_gap, chosen_gap, surprisal, entropy, rank, torch.zeros(n, 5, dtype=torch.long),
                     torch.zeros(n, 5))
    ids = tuple(range(n + 3))
    encoded = EncodedPrompt(ids, (3, n + 3), text="x" * (n + 3), content="x" * n, content_char=3,
                            offsets=tuple((i, i + 1) for i in range(n + 3)))
    hidden = torch.randn(8, generator=generator) + hidden_shift
    return PromptStats(encoded, torch.arange(3, n + 3), stats, None, varentropy, mass_above, hidden)


@pytest.fixture(scope="module")
def benign_fit():
    g = torch.Generator().manual_seed(0)
    return [synthetic(int(torch.randint(5, 40, (1,), generator=g)), g) for _ in range(300)]


@pytest.fixture(scope="module")
def detector(benign_fit):
    return Detector(refusal=None, probe=False).fit_stats(benign_fit)


@pytest.fixture(scope="module")
def fluent_fit():
    """Fluent attacks: benign-looking tokens, a hidden state shifted by 2 in every coordinate."""
    g = torch.Generator().manual_seed(7)
    return [synthetic(int(torch.randint(5, 40, (1,), generator=g)), g, hidden_shift=2.0) for _ in range(60)]


@pytest.fixture(scope="module")
def two_channels(benign_fit, fluent_fit):
    return Detector(refusal=None, probe_layer=0).fit_stats(benign_fit, fluent_fit)


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


def test_the_probe_catches_what_the_tokens_cannot(two_channels):
    g = torch.Generator().manual_seed(8)
    fluent = [synthetic(20, g, hidden_shift=2.0) for _ in range(50)]
    gibberish = [synthetic(30, g, planted=(10, 25)) for _ in range(20)]
    benign = [synthetic(int(torch.randint(5, 40, (1,), generator=g)), g) for _ in range(400)]
    results = {name: [two_channels.score_stats(s) for s in group]
               for name, group in (("fluent", fluent), ("gibberish", gibberish), ("benign", benign))}
    assert sum(r.flagged for r in results["fluent"]) >= 45  # shift 2 in 8 dims: 5.7 sd apart
    assert all(r.flagged for r in results["gibberish"])
    assert sum(r.flagged for r in results["benign"]) / 400 <= 0.03  # target 1%
    for r in results["fluent"] + results["gibberish"]:
        assert r.score == max(r.channels.values()) and set(r.channels) == {"tokens", "windows", "repeats", "probe"}
    # The fluent prompts are caught by the probe, the gibberish by the tokens.
    assert all(r.channels["probe"] > r.channels["tokens"] for r in results["fluent"] if r.flagged)
    assert all(r.channels["tokens"] > two_channels.threshold for r in results["gibberish"])


def test_the_probe_threshold_comes_from_out_of_fold_scores(benign_fit, fluent_fit, two_channels):
    # In-sample probe scores of the benign fit prompts are lower than what a new benign prompt
    # scores; the threshold uses cross-fitted ones, so the fit scores are not the in-sample ones.
    in_sample = two_channels.probe(torch.stack([s.hidden for s in benign_fit]).double())
    center, scale = two_channels.units["probe"]
    assert two_channels.fit_scores != torch.maximum(
        (in_sample - center) / scale, torch.tensor([two_channels._token_channel(s)[0] for s in benign_fit])).tolist()
    with pytest.raises(ValueError, match="attack statistics"):
        Detector(refusal=None, probe_layer=0).fit_stats(benign_fit)
    no_hidden = synthetic(10, torch.Generator().manual_seed(9))
    no_hidden.hidden = None
    with pytest.raises(ValueError, match="hidden state"):
        two_channels.score_stats(no_hidden)


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
    with pytest.raises(ValueError, match="probe_layer"):
        Detector()  # the middle layer comes from the model; without one, say which
    with pytest.raises(ValueError, match="probe_layer"):
        Detector(probe_layer=-1)
    with pytest.raises(ValueError, match="probe_l2"):
        Detector(probe_layer=1, probe_l2=0)
    with pytest.raises(ValueError, match="refusal_feature"):
        Detector(probe=False, refusal_feature=True, refusal=None)
    for window in (0, 2.5, "10"):
        with pytest.raises(ValueError, match="window"):
            Detector(probe=False, window=window)
    assert set(DEFAULT_WEIGHTS) <= set(FEATURES)


def windows_reference(detector: Detector, stats: PromptStats) -> float:
    """The windows channel in benign units, computed plainly: cap each token's surprisal at its
    position bucket's benign median + clip robust sds, average every run of `window` tokens."""
    column = FEATURES.index("surprisal")
    surprisal = [float(v) for v in stats.surprisal]
    capped = [min(v, float(detector.location[b, column] + detector.clip * detector.scale[b, column]))
              for v, b in zip(surprisal, position_buckets(len(stats)).tolist(), strict=True)]
    w = min(detector.window, len(capped))
    raw = max(math.fsum(capped[i : i + w]) / w for i in range(len(capped) - w + 1))
    center, scale = detector.units["windows"]
    return (raw - center) / scale


def test_the_windows_channel_is_the_capped_worst_window(benign_fit, detector):
    g = torch.Generator().manual_seed(11)
    prompts = [synthetic(int(torch.randint(3, 40, (1,), generator=g)), g) for _ in range(30)]
    prompts += [synthetic(30, g, planted=(5, 12)), synthetic(4, g), synthetic(12, g, planted=(11, 12))]
    for stats in prompts:
        # float64 throughout, sums of <= 40 terms of a few nats: agreement to ~1e-12 relative
        assert detector.score_stats(stats).channels["windows"] == pytest.approx(windows_reference(detector, stats),
                                                                              rel=1e-9, abs=1e-9)
    no_windows = Detector(refusal=None, probe=False, window=None).fit_stats(benign_fit)
    assert set(no_windows.score_stats(prompts[0]).channels) == {"tokens", "repeats"}
    assert "windows of 10" in repr(detector) and "windows" not in repr(no_windows)


def test_the_windows_channel_catches_a_run_the_cusum_discounts(benign_fit, detector):
    """Tokens improbable in absolute terms but no more than their (high) entropy predicts: the
    invariant token statistics see nothing; the windows channel flags the run and blames it."""
    g = torch.Generator().manual_seed(12)
    stats = synthetic(30, g)
    stats.stats.entropy[10:22] = 11.0
    stats.stats.surprisal[10:22] = 11.0 + 0.3 * torch.randn(12, generator=g)
    result = detector.score_stats(stats)
    assert result.flagged and max(result.channels, key=result.channels.get) == "windows"
    assert result.channels["tokens"] < detector.threshold
    start, end = result.span_chars
    assert 10 <= start and end <= 22  # the worst window lies inside the planted run


def runs_loop(ids: list[int], countable: list[bool]) -> tuple[int, int]:
    """The longest run of one repeated id over countable positions, by a plain scan."""
    best, length, start = (0, 0), 0, 0
    for i, (token, ok) in enumerate(zip(ids, countable, strict=True)):
        if not ok:
            length = 0
            continue
        if length and token == ids[i - 1]:
            length += 1
        else:
            length, start = 1, i
        if length > best[0]:
            best = (length, start)
    return best


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40))
def test_longest_run_equals_a_plain_scan(tokens):
    ids, countable = [t for t, _ in tokens], [ok for _, ok in tokens]
    assert longest_run(torch.tensor(ids, dtype=torch.long), torch.tensor(countable, dtype=torch.bool)) == \
        runs_loop(ids, countable)
    assert longest_run(torch.tensor(ids, dtype=torch.long)) == runs_loop(ids, [True] * len(ids))


def repeated(n: int, generator: torch.Generator, run: tuple[int, int], text: str, offsets: bool = True) -> PromptStats:
    """A benign-looking synthetic prompt whose user tokens ``run`` (indices) are one token id
    repeated, that token spelling ``text``; its statistics say the model predicted each repeat."""
    stats = synthetic(n, generator)
    a, b = run
    ids = list(stats.encoded.input_ids)
    ids[3 + a : 3 + b] = [10_000] * (b - a)
    pieces = ["x"] * (3 + a) + [text] * (b - a) + ["x"] * (n - b)
    ends = torch.cumsum(torch.tensor([len(p) for p in pieces]), 0).tolist()
    spans = tuple(zip([0] + ends[:-1], ends, strict=True)) if offsets else None
    stats.encoded = EncodedPrompt(tuple(ids), (3, n + 3), "".join(pieces), "".join(pieces[3:]), 3, spans)
    stats.stats.surprisal[a + 2 : b] = 0.05  # after two repeats the model expects the next one
    stats.stats.entropy[a + 2 : b] = 0.3
    return stats


def test_the_repeats_channel_catches_a_predictable_run(benign_fit, detector):
    """GCG's starting string ("! ! ! ...") is predictable token by token once it repeats: the
    surprisal channels see nothing, the repeats channel flags it and blames the run."""
    g = torch.Generator().manual_seed(13)
    center, scale = detector.units["repeats"]
    assert (center, scale) == (1.0, 1.0)  # no synthetic benign prompt repeats a token
    result = detector.score_stats(repeated(30, g, (12, 25), " !"))
    assert result.channels["repeats"] == 13 - 1 and result.flagged
    assert result.channels["tokens"] < detector.threshold and result.channels["windows"] < detector.threshold
    assert result.span_tokens == (12, 25)
    # A number written digit by digit (1000000000000) is no repetition.
    number = detector.score_stats(repeated(30, g, (12, 25), "0"))
    assert number.channels["repeats"] == 1 - 1 and not number.flagged
    assert "repeats" in repr(detector)
    # Without offsets (a slow tokenizer) the token texts come from the tokenizer, or it says so.
    class OneTokenTokenizer:  # token 10_000 spells `text`, every other one "x"
        def __init__(self, text):
            self.text = text

        def batch_decode(self, ids):
            return [self.text if i == [10_000] else "x" for i in ids]

    for text, channel in ((" !", 13 - 1), ("0", 1 - 1)):
        stats = repeated(30, g, (12, 25), text, offsets=False)
        with pytest.raises(ValueError, match="repeats channel needs token offsets"):
            detector.score_stats(stats)
        decoding = Detector(None, OneTokenTokenizer(text), refusal=None, probe=False).fit_stats(benign_fit)
        assert decoding.score_stats(stats).channels["repeats"] == channel
    no_repeats = Detector(refusal=None, probe=False, repeats=False).fit_stats(benign_fit)
    assert "repeats" not in no_repeats.score_stats(benign_fit[0]).channels and "repeats" not in repr(no_repeats)


def test_repeat_units_count_tokens_beyond_the_benign_tail():
    runs = torch.tensor([1.0] * 600 + [2.0] * 395 + [3.0] * 5)  # 0.5% reach 3 tokens
    assert repeat_units(runs, 0.01) == (2.0, 1.0)
    assert repeat_units(runs, 0.001) == (3.0, 1.0)


def test_unfitted_detector_and_too_few_prompts(benign_fit):
    with pytest.raises(ValueError, match="not fitted"):
        Detector(refusal=None, probe=False).score_stats(benign_fit[0])
    with pytest.raises(ValueError, match="at least 99 prompts"):
        Detector(refusal=None, probe=False).fit_stats(benign_fit[:20])
    assert Detector(refusal=None, probe=False, fpr=0.1).fit_stats(benign_fit[:20]).fitted  # 10% needs only 9
    with pytest.raises(ValueError, match="no model"):
        Detector(refusal=None, probe=False).fit_stats(benign_fit).score("hello")


@pytest.mark.parametrize("which", ["detector", "two_channels"])
def test_save_and_load_round_trip(tmp_path, request, which):
    detector = request.getfixturevalue(which)
    path = detector.save(tmp_path / "detector.json")
    data = json.loads(path.read_text())
    assert data["format"] == "logit_processors.detection.Detector" and data["model"] is None
    loaded = Detector.load(path, None, None)
    for stats in (synthetic(30, torch.Generator().manual_seed(3), planted=(10, 20)),
                  synthetic(30, torch.Generator().manual_seed(4), hidden_shift=2.0)):
        a, b = detector.score_stats(stats), loaded.score_stats(stats)
        assert (a.score, a.threshold, a.flagged, a.span, a.channels) == (b.score, b.threshold, b.flagged, b.span,
                                                                          b.channels)
    assert loaded.fit_scores == detector.fit_scores
    data["version"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="refit"):
        Detector.load(path, None, None)


def test_a_detector_saved_before_the_repeats_channel_loads_without_it(tmp_path, benign_fit):
    three_channels = Detector(refusal=None, probe=False, repeats=False).fit_stats(benign_fit)
    data = three_channels.to_dict()
    data["version"] = 3
    del data["repeats"]  # what a version-3 file holds
    path = tmp_path / "v3.json"
    path.write_text(json.dumps(data))
    loaded = Detector.load(path, None, None)
    assert not loaded.repeats and loaded.threshold == three_channels.threshold
    stats = repeated(30, torch.Generator().manual_seed(5), (12, 25), " !")
    assert loaded.score_stats(stats).channels == three_channels.score_stats(stats).channels
    assert set(loaded.score_stats(stats).channels) == {"tokens", "windows"}


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


def test_targets_per_benign_category_and_attack_set():
    rows = [Row("benign", "code", "detector", 100, fpr_threshold=0.01),
            Row("benign", "document", "detector", 100, fpr_threshold=0.03),
            Row("attack", "random", "detector", 10, auroc=1.0, auroc_worst=0.995, tpr_threshold=0.96),
            Row("attack", "random", "windowed perplexity", 10, auroc=0.99),
            Row("attack", "fluent", "detector", 10, auroc=0.9, tpr_at_fpr_worst=0.5),
            Row("attack", "fluent", "windowed perplexity", 10, auroc=0.95)]
    verdicts = {c["target"].split(" (")[0]: c["pass"] for c in check_targets(rows)}
    assert verdicts["benign code: detector FPR at its threshold <= 0.02"]
    assert not verdicts["benign document: detector FPR at its threshold <= 0.02"]
    assert verdicts["random: detector AUROC"] and verdicts["random: detector TPR at its threshold >= 0.95"]
    assert verdicts["random: detector AUROC >= windowed perplexity"]
    assert not verdicts["fluent: detector TPR@1%FPR"] and not verdicts["fluent: detector AUROC >= windowed perplexity"]


# --------------------------------------------------------------------------------------------
# The shipped data


def test_every_benign_category_has_every_split():
    rows = load_benign()
    for category in CATEGORIES:
        mine = [p for p in rows if p.category == category]
        counts = {split: sum(p.split == split for p in mine) for split in SPLITS}
        assert counts["fit"] >= 80 and counts["dev"] >= 25 and counts["test"] >= 80, (category, counts)
    assert load_benign("test", "code") == [p for p in rows if p.split == "test" and p.category == "code"]
    with pytest.raises(ValueError, match="split"):
        load_benign("eval")
    with pytest.raises(ValueError, match="category"):
        load_benign(category="emails")


def test_the_split_rule_holds_on_the_stored_rows():
    # Every stored row's split is split_of(category, key); the only exception: the chat requests
    # the attack sets extend, which are all held out.
    for category, name in BENIGN_FILES.items():
        with data_path(name).open(encoding="utf-8") as f:
            for row in map(json.loads, f):
                expected = "test" if row.get("attack_base") else split_of(category, row["key"])
                assert row["split"] == expected, row["id"]
    # The rule itself: deterministic, the shares of SPLIT_SHARES, independent of other rows.
    keys = [f"k{i}" for i in range(20000)]
    shares = {s: sum(split_of("x", k) == s for k in keys) / len(keys) for s in SPLITS}
    for split, share in SPLIT_SHARES.items():
        assert abs(shares[split] - share) < 0.015  # binomial sd at n=20,000: <= 0.0035
    assert split_of("x", "k1") == split_of("x", "k1") and split_of("y", "k1") in SPLITS


def test_material_never_crosses_splits():
    # Rows that share material share a key, so a snippet, a first turn or a text is in one split.
    rows = load_benign()
    by_text: dict[str, set[str]] = {}
    for p in rows:
        if p.category != "multiturn":
            by_text.setdefault(p.text, set()).add(p.split)
    by_first_turn: dict[str, set[str]] = {}
    for p in rows:
        if p.messages:
            by_first_turn.setdefault(p.messages[0]["content"], set()).add(p.split)
    assert all(len(s) == 1 for s in by_text.values()) and all(len(s) == 1 for s in by_first_turn.values())


def test_benign_traffic_covers_the_issue():
    rows = load_benign()
    kinds = lambda category: {p.kind for p in rows if p.category == category}  # noqa: E731
    assert {"python", "c", "javascript"} <= kinds("code")
    assert len(kinds("multilingual")) >= 8
    scripts = {"Latin": "é", "Cyrillic": "д", "Greek": "α", "Han": "的", "Arabic": "ا"}
    text = "".join(p.text for p in rows if p.category == "multilingual")
    assert all(letter in text for letter in scripts.values())
    assert {"markdown", "log", "json", "changelog"} <= kinds("document")
    documents = [p for p in rows if p.category == "document"]
    assert all(500 <= len(p.text) <= 4400 for p in documents)  # a 500-4,000 character document + a question
    chats = [p for p in rows if p.category == "multiturn"]
    assert all(len(p.messages) >= 3 and p.messages[-1]["role"] == "user" for p in chats)
    assert chats[0].prompt == [dict(m) for m in chats[0].messages] and rows[0].prompt == rows[0].text


@pytest.mark.parametrize("name", sorted(ATTACK_SETS))
def test_attack_sets_extend_held_out_requests(name):
    attacks = load_attacks(name)
    held_out = {p.id: p.text for p in load_benign("test", "chat")}
    dev = {p.id: p.text for p in load_benign("dev", "chat")}
    assert len(load_attacks(name, "test")) >= 8
    for a in attacks:
        assert a.text == a.base + a.suffix and a.suffix.strip() and a.split in ("dev", "test")
        if a.base_id.startswith("b"):  # a chat request: held out for test rows, dev for dev rows
            assert (held_out if a.split == "test" else dev)[a.base_id] == a.base
    with pytest.raises(ValueError, match="attack set"):
        load_attacks("gcg")
    with pytest.raises(ValueError, match="split"):
        load_attacks(name, "fit")


def test_read_prompts(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('"a"\n\n{"text": "b"}\n{"messages": [{"role": "user", "content": "c"}]}\n', encoding="utf-8")
    assert read_prompts(path) == ["a", "b", [{"role": "user", "content": "c"}]]
    plain = tmp_path / "mine.txt"
    plain.write_text("one\n\ntwo {not json}\n", encoding="utf-8")
    assert read_prompts(plain) == ["one", "two {not json}"]
    for bad, match in (('{"text": ""}', "line 1"), ("[1, 2]", "line 1"), ("{oops", "not JSON"), ("", "no prompt")):
        path.write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            read_prompts(path)


def test_statistics_from_logits_keep_copies_not_views_of_the_batch():
    # A view would keep a whole batch's [B, L, V] logits alive as long as the statistics live
    # (an evaluation over 1,600 prompts ran out of memory that way).
    logits, hidden = torch.randn(2, 6, 11), torch.randn(2, 6, 4)
    encoded = EncodedPrompt(tuple(range(6)), (2, 6), text="abcdef", content="cdef", content_char=2)
    stats = stats_from_logits(encoded, logits[0], keep_next_logits=True, hidden=hidden[0, -1])
    assert torch.equal(stats.next_logits, logits[0, -1]) and torch.equal(stats.hidden, hidden[0, -1])
    for kept, batch in ((stats.next_logits, logits), (stats.hidden, hidden)):
        assert kept.untyped_storage().data_ptr() != batch.untyped_storage().data_ptr()
    # The calibration statistics agree with a float64 reference (varentropy: Var of -log p).
    log_p = torch.log_softmax(logits[0, 1:5].double(), -1)
    chosen = torch.tensor([2, 3, 4, 5])
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)
    varentropy = (p * (log_p + entropy[:, None]) ** 2).sum(-1)
    mass = (p * (log_p > log_p.gather(-1, chosen[:, None]))).sum(-1)
    # float32 sums over 11 terms: ~1e-6 relative; 1e-5 allowed
    assert torch.allclose(stats.varentropy.double(), varentropy, rtol=1e-5, atol=1e-6)
    assert torch.allclose(stats.mass_above.double(), mass, rtol=1e-5, atol=1e-6)
