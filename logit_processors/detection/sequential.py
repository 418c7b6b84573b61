"""The sequential statistics of attack detection: the one-sided CUSUM, its span, window means,
conformal thresholds and position buckets (no model, no fitted state).

A run of anomalous tokens is what an inserted suffix looks like token by token; the one-sided
CUSUM of Page (1954, "Continuous inspection schemes") accumulates it:
``S_t = max(0, S_{t-1} + x_t - k)``. Its maximum is the largest sum of ``x_t - k`` over any
contiguous span, and where it last left 0 before its peak is the span's onset.

Example:
    >>> import torch
    >>> x = torch.tensor([0.0, 0.2, 3.0, 3.5, 2.8, 0.1, -0.4])
    >>> cusum(x, 1.0).tolist()[:5]
    [0.0, 0.0, 2.0, 4.5, 6.300000190734863]
    >>> localize(x, 1.0)
    (2, 5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validate import probability

#: Position buckets (index of the token within the user's text): [0], [1], [2, 4), ... [32, inf).
POSITION_BUCKETS: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
MIN_SCALE = 0.1  # the floor of a feature's benign scale (nats, log-rank units, normal scores)


def cusum(x: torch.Tensor, drift: float = 0.0) -> torch.Tensor:
    """One-sided CUSUM ``S_t = max(0, S_{t-1} + x_t - drift)``, ``S_{-1} = 0``, over the last axis.

    Vectorized: ``S_t = C_t - min(0, min_{j <= t} C_j)`` with ``C`` the cumulative sum of
    ``x - drift`` (the CUSUM is the cumulative sum minus its running minimum, floored at 0).

    Example:
        >>> cusum(torch.tensor([0.0, 3.0, 3.0, -1.0, 0.0]), drift=1.0).tolist()
        [0.0, 2.0, 4.0, 2.0, 1.0]
    """
    c = torch.cumsum(x.double() - drift, dim=-1)
    floor = torch.cummin(c, dim=-1).values.clamp_max(0.0)
    return (c - floor).to(x.dtype)


def cusum_span(s: torch.Tensor) -> tuple[int, int] | None:
    """The span ``[onset, end)`` of a CUSUM curve's peak: from where it last left 0 before its
    maximum, through the maximum. ``None`` when the curve never rises above 0.

    Example:
        >>> cusum_span(torch.tensor([0.0, 2.0, 4.0, 2.0, 1.0]))
        (1, 3)
    """
    if s.numel() == 0 or not bool(s.max() > 0):
        return None
    end = int(s.argmax())
    zeros = (s[:end] <= 0).nonzero()
    onset = int(zeros[-1]) + 1 if zeros.numel() else 0
    return onset, end + 1


def localize(x: torch.Tensor, drift: float, curve: torch.Tensor | None = None) -> tuple[int, int] | None:
    """The anomalous span ``[onset, end)`` of token scores ``x``: the CUSUM's peak segment,
    re-estimated for the shift it found.

    The segment maximizing ``sum(x_t - k)`` is the maximum-likelihood location of a shift of
    ``2k`` (an "epidemic" change with onset and end). Detection uses a small ``k`` (``drift``)
    to catch mild shifts; a strong anomaly (gibberish) then drags a few benign neighbours along.
    So the span is recomputed with ``k = max(drift, shift / 2)``, ``shift`` being the mean of
    ``x`` over the first segment: the same segment for a mild shift, a tighter one for a strong.

    Example:
        >>> x = torch.tensor([0.0, 0.9, 4.0, 4.0, 4.0, 0.8, 0.0])
        >>> cusum_span(cusum(x, 0.5)), localize(x, 0.5)
        ((1, 6), (2, 5))
    """
    first = cusum_span(cusum(x, drift) if curve is None else curve)
    if first is None:
        return None
    shift = float(x[first[0] : first[1]].mean())
    if shift / 2 <= drift:
        return first
    return cusum_span(cusum(x, shift / 2)) or first


def window_means(x: torch.Tensor, window: int) -> torch.Tensor:
    """Means of every ``window`` consecutive values of ``x`` (one mean of all when shorter), in
    float64 cumulative sums whatever ``x``'s dtype, returned in ``x``'s dtype.

    Example:
        >>> window_means(torch.tensor([1.0, 1.0, 4.0, 4.0]), 2).tolist()
        [1.0, 2.5, 4.0]
    """
    if x.numel() <= window:
        return x.double().mean().reshape(1).to(x.dtype)
    c = torch.cat([x.new_zeros(1, dtype=torch.float64), torch.cumsum(x.double(), 0)])
    return ((c[window:] - c[:-window]) / window).to(x.dtype)


def longest_run(ids: torch.Tensor, countable: torch.Tensor | None = None) -> tuple[int, int]:
    """``(length, start)`` of the longest run of one id repeated back to back in ``ids`` (the
    first such run on ties; ``(0, 0)`` when empty). Only positions where ``countable`` is true
    take part: any other position ends a run and starts none.

    Example:
        >>> ids = torch.tensor([5, 7, 7, 7, 2, 2, 0, 0, 0, 0])
        >>> longest_run(ids)
        (4, 6)
        >>> longest_run(ids, countable=ids != 0)
        (3, 1)
    """
    ids = ids.flatten()
    countable = torch.ones_like(ids, dtype=torch.bool) if countable is None else countable.flatten().bool()
    if not bool(countable.any()):
        return 0, 0
    # A run starts wherever the id changes or a countable token follows an uncountable one; the
    # run index of each token is the running count of starts, its length a bincount.
    starts = torch.ones_like(countable)
    starts[1:] = (ids[1:] != ids[:-1]) | ~countable[:-1]
    run = torch.cumsum(starts.long(), 0) - 1
    lengths = torch.bincount(run[countable], minlength=int(run[-1]) + 1)
    best = int(lengths.argmax())
    return int(lengths[best]), int(starts.nonzero()[best])


def conformal_threshold(benign_scores: Sequence[float] | torch.Tensor, fpr: float) -> float:
    """The ``ceil((n + 1)(1 - fpr))``-th smallest of ``n`` benign scores (``inf`` if that exceeds n).

    Flagging scores strictly above it, a new benign score exchangeable with the fit scores is
    flagged with probability at most ``fpr`` (split-conformal guarantee).

    Example:
        >>> conformal_threshold(list(range(1, 201)), 0.01)   # 199th smallest of 1..200
        199.0
    """
    scores = torch.as_tensor(benign_scores, dtype=torch.float64).flatten().sort().values
    fpr = probability("fpr", fpr, allow_zero=False, allow_one=False)
    k = math.ceil((scores.numel() + 1) * (1 - fpr))
    return math.inf if k > scores.numel() else float(scores[k - 1])


def position_buckets(n: int) -> torch.Tensor:
    """Bucket index of each of ``n`` consecutive user tokens (see :data:`POSITION_BUCKETS`).

    Example:
        >>> position_buckets(10).tolist()
        [0, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    """
    return torch.bucketize(torch.arange(n), torch.tensor(POSITION_BUCKETS[1:]), right=True)


def robust_location_scale(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column median and ``1.4826 * MAD`` (the standard deviation, for a normal), floored.

    The floor matters: the first token of a chat request is always predicted from the same
    template, so its entropy and top gap are constant (MAD 0) and rounding would explode.
    """
    location = rows.median(dim=0).values
    mad = (rows - location).abs().median(dim=0).values
    return location, (1.4826 * mad).clamp_min(MIN_SCALE)


__all__ = ["POSITION_BUCKETS", "conformal_threshold", "cusum", "cusum_span", "localize", "longest_run",
           "position_buckets", "robust_location_scale", "window_means"]
