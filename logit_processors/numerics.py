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
    >>> round(numerics.log_softmax(z).exp().sum().item(), 6)
    1.0
    >>> numerics.log_odds(torch.log(torch.tensor([0.5]))).item()
    0.0
"""

from __future__ import annotations

import math

import numpy as np
import torch

NEG_INF = float("-inf")
LOG_HALF = -math.log(2.0)


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float type reductions of ``dtype`` scores run in: float64 stays, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_float32(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` in at least float32: half precision is upcast, float32/float64 returned as is."""
    return scores if scores.dtype == reduction_dtype(scores.dtype) else scores.float()


def finite_row_max(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Row maximum with ``keepdim``, replaced by 0 where the row is fully masked.

    Subtracting it is the stable shift of log-sum-exp; using 0 for fully masked rows keeps
    ``-inf - shift`` at ``-inf`` instead of ``-inf - (-inf) = NaN``.
    """
    row_max = scores.amax(dim=dim, keepdim=True)
    return torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))


def shifted_by_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(scores - row max) / temperature`` in float32: the input of ``log_softmax(scores / T)``
    without its overflow (``30 / 1e-38`` is ``inf`` in float32; shifted, the top score is 0 and the
    rest can only underflow to ``-inf``, probability 0 either way). Log-softmax and log-odds are
    shift-invariant, so nothing else changes.

    Example:
        >>> import torch
        >>> shifted_by_temperature(torch.tensor([[3.0, 1.0, -float("inf")]]), 0.5).tolist()
        [[0.0, -4.0, -inf]]
    """
    z = as_float32(scores)
    return (z - finite_row_max(z)) / temperature


def tempered_log_softmax(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Float32 ``log_softmax(scores / temperature)`` over the last dim, through
    :func:`shifted_by_temperature` (no overflow); at temperature 1 the scores go in as they are.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 1.0, -float("inf")]])
        >>> tempered_log_softmax(z, 0.5).exp().tolist()
        [[0.5, 0.5, 0.0]]
    """
    return log_softmax(scores if temperature == 1 else shifted_by_temperature(scores, temperature))


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


def log_odds_of_scores(scores: torch.Tensor) -> torch.Tensor:
    """Float32 log-odds ``log p_i - log(1 - p_i)`` of ``softmax(scores)`` over the last axis, exact
    even where ``p_i`` rounds to 1.

    ``1 - p_i`` is the probability of "any other token", so the log-odds are
    ``z_i - logsumexp_{j != i} z_j``. For every token but the row's top one ``p_i <= 1/2`` and
    :func:`log_odds` of the log-probability is accurate. The top token's ``1 - p`` can be far
    below float32's resolution of 1 (``p = 1 - 1e-9`` rounds to 1.0, whose log-odds are ``+inf``
    where the true value is 20.7), so its log-odds are computed from the definition. Masked
    entries (``-inf``, ``p = 0``) give ``-inf``; a row's only unmasked entry (``p = 1`` exactly)
    gives ``+inf``; never NaN.

    Example:
        >>> import torch
        >>> z = torch.tensor([[30.0, 0.0, -float("inf")]])   # p = (1 - 9.4e-14, 9.4e-14, 0)
        >>> log_odds_of_scores(z).tolist()
        [[30.0, -30.0, -inf]]
    """
    z = as_float32(scores)
    odds = log_odds(log_softmax(z))
    top = z.argmax(dim=-1, keepdim=True)
    z_top = z.gather(-1, top)
    others = logsumexp(z.scatter(-1, top, NEG_INF), keepdim=True)
    # No other unmasked token: p_top is exactly 1 (+inf), or 0 in a fully masked row (-inf).
    alone = torch.where(z_top > NEG_INF, math.inf, NEG_INF)
    top_odds = torch.where(others > NEG_INF, z_top - others, alone)
    return odds.scatter_(-1, top, top_odds)


def masked_weighted_sum(terms: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` in float32 where ``-inf`` means *masked*, never NaN.

    The terms are log-scores (log-probabilities or log-odds) of the same ``[B, V]`` shape (or
    broadcastable to the first one's). The rules, which keep masks meaningful whatever the signs:

    * a term with weight 0 is ignored entirely (``0 * inf`` would be NaN);
    * an entry that any weighted term has at ``-inf`` (probability 0) is ``-inf`` in the result,
      also when that weight is negative: a negative weight never turns an impossible token into
      a favourite;
    * ``+inf`` (log-odds of a probability of exactly 1, a row's only unmasked token) counts as 0:
      every other entry of that row is masked by the same term, so its value need only be finite.

    NaN in a term propagates (it is an upstream error, not hidden here).

    Example:
        >>> import torch
        >>> a = torch.tensor([[-1.0, -2.0, -float("inf")]])
        >>> b = torch.tensor([[-3.0, -float("inf"), -1.0]])
        >>> masked_weighted_sum([a, b], [1.0, -0.5]).tolist()
        [[0.5, -inf, -inf]]
    """
    if len(terms) != len(weights):
        raise ValueError(f"masked_weighted_sum: {len(terms)} terms but {len(weights)} weights; they must match")
    weighted = [(as_float32(t), float(w)) for t, w in zip(terms, weights) if w != 0]
    if not weighted:
        raise ValueError(f"masked_weighted_sum: every weight is 0 (weights {list(weights)}); at least one must not be")
    shape = torch.broadcast_shapes(*(t.shape for t, _ in weighted))
    total = torch.zeros(shape, dtype=weighted[0][0].dtype, device=weighted[0][0].device)
    masked = torch.zeros(shape, dtype=torch.bool, device=total.device)
    for term, weight in weighted:
        masked |= term == NEG_INF
        total.add_(torch.nan_to_num(term, nan=math.nan, posinf=0.0, neginf=0.0), alpha=weight)
    return total.masked_fill_(masked, NEG_INF)


# The lowest finite float and the next one up, per float type that reductions run in.
_LOWEST_AND_NEXT = {
    dtype: (float(np.finfo(np_dtype).min), float(np.nextafter(np.finfo(np_dtype).min, np_dtype(0))))
    for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64))
}


def _shifted_and_clamped(
    scores: torch.Tensor, dim: int, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, has_max)``: ``y = z - max(z)`` per row in float32 (at least), masked entries at the
    lowest finite float instead of ``-inf``; ``has_max`` is False for a row whose max is not
    finite (fully masked, or NaN), for which ``y`` means nothing.

    With masked entries finite, ``exp(y) = 0`` and ``0 * y = 0`` there, never NaN; and a masked
    entry is exactly the lowest float, so masks can still be counted from ``y`` (see
    :func:`normalized_entropy`). Two passes (a subtraction and an in-place clamp).
    """
    z = as_float32(scores)
    row_max = z.amax(dim=dim, keepdim=True)
    has_max = torch.isfinite(row_max)
    y = torch.sub(z, torch.where(has_max, row_max, 0.0), out=out).clamp_min_(_LOWEST_AND_NEXT[z.dtype][0])
    return y, has_max.squeeze(dim)


def _entropy_of_shifted(y: torch.Tensor, has_max: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    # H = -sum p log p = log Z - E_p[y], with Z = sum exp(y). One fused softmax (its exp is the
    # only one here); log Z is read off the top token, whose y is 0 and probability 1 / Z; a dot
    # product gives E_p[y]. The softmax's own normalizer is a plain float32 accumulation (a
    # relative error ~1e-6 over 10^5 terms, which E_p[y] would multiply), so the probabilities
    # are renormalized by their (pairwise, accurate) sum s: p = q / s, log Z = log s - log q_top.
    # Rows without a finite max: 0.
    q = torch.softmax(y, dim=dim) if out is None else torch.ops.aten._softmax.out(y, dim, False, out=out)
    s = q.sum(dim=dim)
    log_z = s.log().sub_(q.amax(dim=dim).log())
    # E_q[y] through q * y in place and a sum: linalg.vecdot allocates that product itself.
    h = log_z.sub_(q.mul_(y).sum(dim=dim).div_(s))
    return torch.where(has_max, h, 0.0)


def entropy(scores: torch.Tensor, dim: int = -1, work: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(scores)`` in float32; 0 for a fully masked row.

    Masked entries contribute ``0 * log 0 = 0`` (the limit), not NaN; a row containing NaN
    has no distribution and gets 0, like a fully masked one. Computed as ``log Z - E_p[z - max]``
    from one softmax: one exponential pass instead of the two of ``-sum(softmax *
    log_softmax)``, half its ``[B, V]`` temporaries, and in float32 within the rounding bound of
    its two pairwise sums (``sqrt(log2 V) * eps * (1 + 2 |E_p[z - max]|)``, a few 1e-6 nats on
    262,144 logits) where that form is off by up to 1e-4 (tests/test_numerics.py).

    ``work``: two scratch tensors shaped like ``scores``, of the float type the reduction runs
    in (float32; float64 for float64 scores), written into instead of allocating two
    ``[B, V]`` temporaries. A processor called at every step keeps and passes them: repeated
    large allocations are mapped fresh by the allocator and page-faulted at every call (on this
    project's CPU that made :class:`~logit_processors.EntropyTemperature` several times slower).

    Example:
        >>> import torch
        >>> round(entropy(torch.tensor([[0.0, 0.0, -float("inf")]])).item(), 6)   # log 2
        0.693147
    """
    y_out, q_out = work if work is not None else (None, None)
    return _entropy_of_shifted(*_shifted_and_clamped(scores, dim, y_out), dim=dim, out=q_out)


def normalized_entropy(
    scores: torch.Tensor, dim: int = -1, work: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Entropy divided by its maximum ``log(n)``, n = unmasked entries; in [0, 1].

    Rows with fewer than two unmasked entries have no uncertainty: 0 (so do rows with NaN).
    Entries more than the float range below their row's maximum count as masked (their
    probability is exactly 0 either way). ``work``: as for :func:`entropy`.
    """
    y_out, q_out = work if work is not None else (None, None)
    y, has_max = _shifted_and_clamped(scores, dim, y_out)
    h = _entropy_of_shifted(y, has_max, dim, q_out)
    # Count the masks in y itself, now free to overwrite (no [B, V] temporary). Masked entries
    # are exactly the lowest float, every other one is at least the next float up: clamping at
    # that next float and subtracting it leaves (lowest - next) at each masked entry and 0
    # elsewhere, exact multiples of 2^104 (float32) whose sum is exact below 2^24 entries.
    # Float passes only: counting through a bool tensor (y == lowest) costs 2-3x more on CPU.
    lowest, next_up = _LOWEST_AND_NEXT[y.dtype]
    masked = y.clamp_max_(next_up).sub_(next_up).sum(dim=dim) / (lowest - next_up)
    n = y.shape[dim] - masked
    return torch.where(has_max & (n > 1), h / torch.log(n.clamp_min(2.0)), 0.0).clamp_(0.0, 1.0)


def empty_rows(scores: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: rows whose every entry is ``-inf`` (a row with NaN is not empty: it is invalid,
    which is the input policy's business, not the masking policy's)."""
    return scores.amax(dim=-1) == NEG_INF


def fully_masked_rows(scores: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: rows whose every entry is ``-inf`` (or NaN): nothing left to sample."""
    # One read-only reduction (no [B, V] temporary). ``not (max > -inf)`` is also true when the
    # max is NaN, so a row poisoned by NaN is reported too.
    return ~(scores.amax(dim=-1) > NEG_INF)


def tempered_log_partition(
    scores: torch.Tensor, betas: torch.Tensor | list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log Z(β) = logsumexp(β z)`` and its first two derivatives in ``β``, for each row ``z`` of
    ``scores [R, V]`` and each inverse temperature ``β > 0`` in ``betas [K]``.

    Returns float64 ``(log_z, mean, variance)``, each ``[R, K]``. The derivatives are the mean
    and variance of ``z`` under ``softmax(β z)`` (``log Z`` is the cumulant generating function
    of the logits), so the negative log-likelihood of a token ``y`` at temperature ``T = 1/β``,
    ``log Z(β) - β z_y``, has derivative ``mean - z_y`` and second derivative ``variance >= 0``:
    it is convex in ``β`` (Guo et al., 2017, fit ``T`` by minimizing it).

    Stable for any ``β``: the row maximum ``m`` is factored out, ``log Z = β m + log sum
    exp(β (z - m))`` with every exponent ``<= 0``. Masked entries (``-inf``) weigh 0. The work
    runs over blocks of rows that fit in a core's cache, so that the ``K`` passes over a block
    read it from cache rather than from memory; sums are float32 (pairwise), combined in float64.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0, -float("inf")]])
        >>> log_z, mean, var = tempered_log_partition(z, [1.0, 2.0])
        >>> round(float(log_z[0, 0]), 4) == round(float(torch.logsumexp(z, -1)), 4)
        True
        >>> mean.shape, bool((var >= 0).all())
        (torch.Size([1, 2]), True)
    """
    z = as_float32(scores)
    if z.dim() != 2:
        raise ValueError(f"scores must have shape [rows, vocab]; got shape {tuple(z.shape)}")
    betas = [float(b) for b in (betas.tolist() if isinstance(betas, torch.Tensor) else betas)]
    if not betas or not all(math.isfinite(b) and b > 0 for b in betas):
        raise ValueError(f"betas must be a non-empty list of positive finite inverse temperatures; got {betas}")
    rows, vocab = z.shape
    sums = torch.empty(rows, len(betas), 3, dtype=torch.float64, device=z.device)
    row_max = z.amax(dim=-1, keepdim=True)
    if bool(fully_masked_rows(z).any()):
        raise ValueError("tempered_log_partition: a row of scores is fully masked (all -inf) or NaN")
    block = max(1, (1 << 18) // max(vocab, 1))  # ~1 MB of float32: stays in a core's L2 cache
    for start in range(0, rows, block):
        # u = z - max <= 0; -inf (weight 0) is clamped to a large finite value so that
        # 0 * u and 0 * u^2 are 0, not NaN.
        u = (z[start : start + block] - row_max[start : start + block]).clamp_min_(-1e15)
        u2 = u * u
        w = torch.empty_like(u)
        for k, beta in enumerate(betas):
            torch.mul(u, beta, out=w).exp_()
            sums[start : start + block, k, 0] = w.sum(dim=-1)
            sums[start : start + block, k, 1] = torch.linalg.vecdot(w, u)
            sums[start : start + block, k, 2] = torch.linalg.vecdot(w, u2)
    beta = torch.tensor(betas, dtype=torch.float64, device=z.device)
    m = row_max.double()
    total, first, second = sums.unbind(-1)
    mean_u = first / total
    return beta * m + torch.log(total), m + mean_u, (second / total - mean_u * mean_u).clamp_min(0.0)
