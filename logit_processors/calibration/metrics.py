"""Calibration metrics for next-token predictions: NLL, top-1 ECE, top-label Brier, reliability bins.

A language model's next-token distribution is a classifier at every position. Its *top-1
prediction* is the most likely token, its *confidence* the probability it gives that token, and
it is *correct* when the actual next token is that one. A calibrated model is right 70% of the
time when it says 70% (Guo et al., 2017, "On Calibration of Modern Neural Networks"). Measured
here, from per-position ``(confidence, correct, nll)`` triples (:class:`Predictions`):

``nll``
    mean ``-log p(actual token)`` in nats: the proper scoring rule temperature scaling minimizes.
``ece``
    top-1 expected calibration error: the confidences are put into ``n_bins`` bins (15 by
    default, as in Guo et al.), and ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|``.
    Two binnings: ``"width"``, equal-width bins over ``[0, 1]``, right-closed ``((b-1)/M, b/M]``
    as in Guo et al. (a confidence of exactly 0 goes to the first bin); ``"mass"``, equal-mass
    bins: the predictions sorted by confidence and cut into ``n_bins`` groups whose sizes differ
    by at most one (Nixon et al., 2019, "Measuring Calibration in Deep Learning"). Equal-mass bins
    are less dominated by the few crowded bins of a skewed confidence histogram.
``brier``
    top-label Brier score: mean ``(confidence - correct)^2``, the squared error of the top-1
    confidence as a forecast of being right (Kull et al., 2019 call the top-label view
    "confidence calibration").

Why hand-written: equal-mass ECE and the top-label Brier score are not in torchmetrics, and
the three metrics share one binning of ``(confidence, correct)`` pairs that the streamed
evaluation accumulates chunk by chunk; torchmetrics' ``binary_calibration_error`` computes the
equal-width ECE from the same pairs, and the tests check ours against it (and against an
independent loop implementation for the others), so that the one place both exist they agree.

Example:
    >>> import torch
    >>> from logit_processors.calibration.metrics import Predictions
    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 4.0]])
    >>> p = Predictions.from_logits(logits, torch.tensor([0, 2, 2]))
    >>> p.correct.tolist()
    [True, False, True]
    >>> s = p.summary(n_bins=2)
    >>> round(s["accuracy"], 3), round(s["confidence"], 3), round(s["ece_width"], 3)
    (0.667, 0.869, 0.202)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .. import numerics

Binning = Literal["width", "mass"]
BINNINGS: tuple[str, ...] = ("width", "mass")
DEFAULT_BINS = 15


@dataclass(frozen=True)
class Predictions:
    """Per-position top-1 predictions: ``confidence`` (float64, top-1 probability), ``correct``
    (bool: the actual token was the top-1 token) and ``nll`` (float64, ``-log p(actual)``), all
    ``[N]`` on the CPU."""

    confidence: torch.Tensor
    correct: torch.Tensor
    nll: torch.Tensor

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> Predictions:
        """Top-1 predictions of ``softmax(logits / temperature)`` (``logits [N, V]``, ``labels [N]``).

        The top-1 token is ``argmax`` (unchanged by any temperature); its probability
        ``exp(z_max / T - logsumexp(z / T))`` and the NLL are computed stably in float32 via
        :mod:`logit_processors.numerics`.
        """
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
            raise ValueError(f"logits must be a float tensor [N, V]; got {_describe(logits)}")
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"labels must be a tensor [N] with N = {logits.shape[0]}; got {_describe(labels)}")
        z = numerics.as_float32(logits)
        if temperature != 1.0:
            z = z / temperature
        log_normalizer = numerics.logsumexp(z)
        top, top_ids = z.max(dim=-1)
        chosen = z.gather(-1, labels.to(z.device).long()[:, None]).squeeze(-1)
        return cls(
            confidence=(top - log_normalizer).exp().double().cpu(),
            correct=(top_ids == labels.to(top_ids.device)).cpu(),
            nll=(log_normalizer - chosen).double().cpu(),
        )

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        if not parts:
            return cls(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool),
                       torch.zeros(0, dtype=torch.float64))
        return cls(*(torch.cat(fields) for fields in zip(*((p.confidence, p.correct, p.nll) for p in parts))))

    def summary(self, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
        """``nll``, ``ece_width``, ``ece_mass``, ``brier``, ``accuracy``, ``confidence`` (means) and ``positions``."""
        return {
            "nll": float(self.nll.mean()) if len(self) else math.nan,
            "ece_width": expected_calibration_error(self.confidence, self.correct, n_bins, "width"),
            "ece_mass": expected_calibration_error(self.confidence, self.correct, n_bins, "mass"),
            "brier": top_label_brier(self.confidence, self.correct),
            "accuracy": float(self.correct.double().mean()) if len(self) else math.nan,
            "confidence": float(self.confidence.mean()) if len(self) else math.nan,
            "positions": len(self),
        }


@dataclass(frozen=True)
class ReliabilityBins:
    """Per bin: confidence range ``[lower, upper]``, ``count``, mean ``confidence`` and ``accuracy``
    (``nan`` for an empty bin)."""

    lower: torch.Tensor
    upper: torch.Tensor
    count: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor

    @property
    def ece(self) -> float:
        total = int(self.count.sum())
        if total == 0:
            return math.nan
        filled = self.count > 0
        gaps = (self.accuracy[filled] - self.confidence[filled]).abs()
        return float((self.count[filled].double() * gaps).sum() / total)


def reliability_bins(
    confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = DEFAULT_BINS, binning: Binning = "width"
) -> ReliabilityBins:
    """Bin the predictions by confidence (see the module docstring for the two binnings).

    Example:
        >>> import torch
        >>> bins = reliability_bins(torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([False, True, True, True]), 2)
        >>> bins.count.tolist(), bins.accuracy.tolist()
        ([2, 2], [0.5, 1.0])
    """
    confidence, correct = _check_pair(confidence, correct)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}; got {binning!r}")
    if binning == "width":
        edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
        # bucketize(right=False) - 1 puts c in the bin with edges[b] < c <= edges[b + 1].
        index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
        lower, upper = edges[:-1], edges[1:]
    else:
        order = torch.argsort(confidence, stable=True)
        index = torch.empty_like(order)
        for b, part in enumerate(torch.tensor_split(order, n_bins)):
            index[part] = b
        lower = torch.full((n_bins,), math.nan, dtype=torch.float64)
        upper = torch.full((n_bins,), math.nan, dtype=torch.float64)
        lower.scatter_reduce_(0, index, confidence, "amin", include_self=False)
        upper.scatter_reduce_(0, index, confidence, "amax", include_self=False)
    count = torch.bincount(index, minlength=n_bins)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence)
    sum_correct = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct.double())
    denominator = count.double().where(count > 0, torch.tensor(math.nan, dtype=torch.float64))
    return ReliabilityBins(lower, upper, count, sum_conf / denominator, sum_correct / denominator)


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = DEFAULT_BINS, binning: Binning = "width"
) -> float:
    """Top-1 ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` (``nan`` with no predictions).

    Example:
        >>> import torch
        >>> round(expected_calibration_error(torch.tensor([0.9, 0.9]), torch.tensor([True, False])), 6)
        0.4
    """
    return reliability_bins(confidence, correct, n_bins, binning).ece


def top_label_brier(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Mean ``(confidence - correct)^2`` (``nan`` with no predictions).

    Example:
        >>> import torch
        >>> round(top_label_brier(torch.tensor([0.9, 0.6]), torch.tensor([True, False])), 6)
        0.185
    """
    confidence, correct = _check_pair(confidence, correct)
    if confidence.numel() == 0:
        return math.nan
    return float(((confidence - correct.double()) ** 2).mean())


def _check_pair(confidence, correct) -> tuple[torch.Tensor, torch.Tensor]:
    confidence = torch.as_tensor(confidence).detach().cpu().double().flatten()
    correct = torch.as_tensor(correct).detach().cpu().flatten()
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence has {confidence.numel()} entries but correct {correct.numel()}; they must match")
    if confidence.numel() and not bool(((confidence >= 0) & (confidence <= 1)).all()):
        raise ValueError("confidence must be probabilities in [0, 1] (no NaN)")
    return confidence, correct.bool()


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"
