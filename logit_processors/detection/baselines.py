"""Perplexity filters, the published baselines that :class:`~logit_processors.detection.Detector`
is measured against (always side by side, thresholds at the same false-positive rate).

:class:`PerplexityFilter`
    whole-prompt log-perplexity: the mean surprisal of the user's tokens (Alon & Kamfonas 2023,
    "Detecting Language Model Attacks with Perplexity"; Jain et al. 2023, "Baseline Defenses
    for Adversarial Attacks Against Aligned Language Models"). A long benign request dilutes a
    short suffix, which is its known weakness.
:class:`WindowedPerplexityFilter`
    the mean surprisal of every window of ``window`` consecutive tokens (Jain et al. use 10);
    the prompt's score is the worst window, and the flagged tokens are those of the windows
    above the threshold.

Both work on the same :class:`~logit_processors.detection.prompt_stats.PromptStats` as the detector (so
one forward pass serves all three), are fitted the same way (threshold = conformal quantile of
the benign fit scores at ``fpr``) and return the same
:class:`~logit_processors.detection.DetectionResult`. (Jain et al. set the threshold at the
maximum perplexity of a set of harmful prompts; here it comes from benign prompts at a
target false-positive rate, so every method is compared at the same FPR.)

Example:
    >>> import torch
    >>> from logit_processors.detection.sequential import window_means
    >>> window_means(torch.tensor([1.0, 1.0, 4.0, 4.0]), 2).tolist()
    [1.0, 2.5, 4.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validate import positive_int, probability
from .detector import DEFAULT_FPR, DEFAULT_WINDOW, DetectionResult, conformal_threshold
from .prompt_stats import PromptStats, nan_to_num
from .sequential import window_means


class _PerplexityBase:
    name = "perplexity"

    def __init__(self, *, fpr: float = DEFAULT_FPR):
        self.fpr = probability("fpr", fpr, allow_zero=False, allow_one=False)
        self.threshold: float | None = None
        self.fit_scores: list[float] = []

    def fit_stats(self, stats: Sequence[PromptStats]):
        self.fit_scores = [self._score(s, math.inf).score for s in stats]
        self.threshold = conformal_threshold(self.fit_scores, self.fpr)
        return self

    def raw_score(self, stats: PromptStats) -> float:
        """The filter's score of one prompt, no threshold needed (e.g. for a ROC curve)."""
        return self._score(stats, math.inf).score

    def score_stats(self, stats: PromptStats) -> DetectionResult:
        if self.threshold is None:
            raise ValueError(f"this {type(self).__name__} is not fitted: call fit_stats(benign_stats) first")
        return self._score(stats, self.threshold)

    def _score(self, stats: PromptStats, threshold: float) -> DetectionResult:
        raise NotImplementedError


class PerplexityFilter(_PerplexityBase):
    """Flags a prompt whose user tokens' mean surprisal (log-perplexity, nats) is above the threshold."""

    name = "perplexity"

    def _score(self, stats: PromptStats, threshold: float) -> DetectionResult:
        surprisal = nan_to_num(stats.surprisal)
        score = float(surprisal.double().mean())
        span = (int(stats.positions[0]), int(stats.positions[-1]) + 1)
        curve = torch.cumsum(surprisal.double(), 0) / torch.arange(1, len(surprisal) + 1)
        return DetectionResult(score, threshold, score > threshold, span, stats.positions, surprisal,
                               curve.float(), stats, flagged_positions=stats.positions)

    def __repr__(self) -> str:
        return f"PerplexityFilter(threshold={self.threshold}, fpr={self.fpr})"


class WindowedPerplexityFilter(_PerplexityBase):
    """Flags a prompt when some window of ``window`` tokens has a mean surprisal above the threshold."""

    name = "windowed perplexity"

    def __init__(self, window: int = DEFAULT_WINDOW, *, fpr: float = DEFAULT_FPR):
        super().__init__(fpr=fpr)
        self.window = positive_int("window", window)

    def _score(self, stats: PromptStats, threshold: float) -> DetectionResult:
        surprisal = nan_to_num(stats.surprisal)
        means = window_means(surprisal, self.window)
        score = float(means.max())
        width = min(self.window, len(surprisal))
        above = (means > threshold).nonzero().flatten().tolist()
        starts = above if above else [int(means.argmax())]
        inside = sorted({i for s in starts for i in range(s, s + width)})
        flagged_positions = stats.positions[inside]
        span = (int(flagged_positions[0]), int(flagged_positions[-1]) + 1)
        return DetectionResult(score, threshold, score > threshold, span, stats.positions, surprisal,
                               means, stats, flagged_positions=flagged_positions)

    def __repr__(self) -> str:
        return f"WindowedPerplexityFilter(window={self.window}, threshold={self.threshold}, fpr={self.fpr})"
