"""Shared numerics: the one place where logits become probabilities, log-odds and entropies.

Logits are log-counts: ``exp(z)`` are unnormalized counts and softmax normalizes them. Only
differences matter (``p_i / p_j = exp(z_i - z_j)``), so everything here is shift-invariant per
row and computed stably by subtracting the row maximum (log-sum-exp).

Conventions used throughout the library:

* Reductions that can overflow or lose precision (exp, sums, division by a small temperature)
  run in float32 (float64 stays float64) whatever the input dtype; callers cast back when they return scores.
* ``-inf`` means "masked": probability exactly 0. A row whose every entry is ``-inf`` is a
  *fully masked row*. These functions never turn it into NaN: its log-probabilities stay
  ``-inf``, its log-sum-exp is ``-inf``, its entropy is 0. Whether such a row is an error is a
  policy decided by the processors (see :func:`fully_masked_rows`).
* A row containing NaN has no meaningful distribution: :func:`log_softmax`, :func:`softmax`
  and :func:`entropy` treat it like a fully masked row (all ``-inf``, all 0, entropy 0), and
  :func:`fully_masked_rows` reports it, so the processors' policy sees it.

Example:
    >>> import torch
    >>> from logit_processors import numerics
    >>> z = torch.tensor([[2.0, 0.0, -float("inf")]])
    >>> numerics.log_softmax(z).exp().sum().item()
    1.0
    >>> numerics.log_odds(torch.log(torch.tensor([0.5]))).item()
    0.0
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")
LOG_HALF = -math.log(2.0)


def as_float32(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` in at least float32: half precision is upcast, float32/float64 returned as is."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()


def finite_row_max(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Row maximum with ``keepdim``, replaced by 0 where the row is fully masked.

    Subtracting it is the stable shift of log-sum-exp; using 0 for fully masked rows keeps
    ``-inf - shift`` at ``-inf`` instead of ``-inf - (-inf) = NaN``.
    """
    row_max = scores.amax(dim=dim, keepdim=True)
    return torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))


def logsumexp(scores: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Stable ``log(sum(exp(scores)))`` in float32; ``-inf`` for a fully masked row."""
    # torch.logsumexp already subtracts the max and maps an all -inf row to -inf.
    return torch.logsumexp(as_float32(scores), dim=dim, keepdim=keepdim)


def log_softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Float32 log-probabilities; a fully masked row stays all ``-inf`` (never NaN).

    Works for raw logits and for scores that already are log-probabilities (beam search):
    the result is the same because log-softmax is shift-invariant.
    """
    # torch's fused log_softmax is about twice as fast on CPU as ``z - logsumexp(z)``. For a
    # row without a finite entry it computes -inf - (-inf) = NaN; replacing NaN by -inf in the
    # (fresh) result is one vectorized pass, with no bool mask and no host sync.
    return torch.log_softmax(as_float32(scores), dim=dim).nan_to_num_(nan=NEG_INF, posinf=math.inf, neginf=NEG_INF)


def softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Float32 probabilities; a fully masked row is all zeros (never NaN)."""
    # torch's fused softmax is faster than exp(log_softmax) (its exp is vectorized).
    return torch.softmax(as_float32(scores), dim=dim).nan_to_num_(nan=0.0, posinf=math.inf)


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p <= 0``, accurate over the whole range.

    Maechler (2012), "Accurately computing log(1 - exp(-|a|))": use ``log(-expm1(a))`` near 0,
    where ``1 - exp(a)`` cancels, and ``log1p(-exp(a))`` further out, where ``exp(a)`` is tiny.
    Maps 0 to ``-inf`` and ``-inf`` to 0.
    """
    log_p = log_p.clamp_max(0.0)
    near_zero = log_p > LOG_HALF
    # Evaluate each branch only on inputs where it is accurate and finite, so that the unused
    # branch cannot leak a NaN gradient or value through torch.where.
    safe_near = torch.where(near_zero, log_p, torch.full_like(log_p, LOG_HALF))
    safe_far = torch.where(near_zero, torch.full_like(log_p, LOG_HALF), log_p)
    return torch.where(near_zero, torch.log(-torch.expm1(safe_near)), torch.log1p(-torch.exp(safe_far)))


def log_odds(log_p: torch.Tensor) -> torch.Tensor:
    """Log-odds ``log p - log(1 - p)`` from log-probabilities, computed stably.

    ``p = 0`` (``log_p = -inf``) gives ``-inf``; ``p = 1`` gives ``+inf``; never NaN.
    For calibrated, conditionally independent forecasters, log-odds add (odds multiply).
    """
    return log_p - log1mexp(log_p)


def entropy(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(scores)`` in float32; 0 for a fully masked row.

    Masked entries contribute ``0 * log 0 = 0`` (the limit), not NaN.
    """
    log_p = log_softmax(scores, dim=dim)
    p = softmax(scores, dim=dim)
    # Clamping -inf to the smallest float makes a masked entry 0 * (-3.4e38) = 0 rather than
    # 0 * -inf = NaN, in one vectorized pass (no bool mask).
    return -(p * log_p.clamp_min(torch.finfo(log_p.dtype).min)).sum(dim=dim)


def count_unmasked(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Number of entries per row that are not ``-inf`` (float32, for use in formulas)."""
    # isneginf is a single vectorized pass; NaN entries count as unmasked, as with != -inf.
    return scores.shape[dim] - scores.isneginf().sum(dim=dim, dtype=torch.float32)


def normalized_entropy(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy divided by its maximum ``log(n)``, n = unmasked entries; in [0, 1].

    Rows with fewer than two unmasked entries have no uncertainty: 0.
    """
    n = count_unmasked(scores, dim=dim)
    max_entropy = torch.log(n.clamp_min(2.0))
    return torch.where(n > 1, entropy(scores, dim=dim) / max_entropy, torch.zeros_like(n)).clamp(0.0, 1.0)


def fully_masked_rows(scores: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: rows whose every entry is ``-inf`` (or NaN): nothing left to sample."""
    # One read-only reduction (no [B, V] temporary). ``not (max > -inf)`` is also true when the
    # max is NaN, so a row poisoned by NaN is reported too.
    return ~(scores.amax(dim=-1) > NEG_INF)
