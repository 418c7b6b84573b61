"""The statistics of one next-token distribution: the vectorized kernel behind every trace.

For scores ``[..., V]`` (logits or log-probs: every statistic is shift-invariant) and the token
actually chosen, :func:`gap_stats` computes in float32 on the scores' device the top gap, the
chosen gap, the surprisal, the entropy, the rank and the top alternatives (see
:mod:`logit_processors.gaps` for what each one means).

Example:
    >>> import torch
    >>> logits = torch.tensor([[3.0, 1.0, 0.0, float("-inf")]])
    >>> s = gap_stats(logits, torch.tensor([1]), top_k=2)
    >>> round(s.top_gap.item(), 4), round(s.chosen_gap.item(), 4), s.rank.item()
    (2.0, 2.0, 1)
    >>> s.top_ids.tolist()
    [[0, 1]]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import numerics
from ..validate import describe, positive_int

#: The per-token statistics, in record order.
STATISTICS: tuple[str, ...] = ("top_gap", "chosen_gap", "surprisal", "entropy", "rank")
DEFAULT_TOP_K = 5


class GapStats(NamedTuple):
    """Statistics of a batch of next-token distributions; every field has the batch shape ``[...]``
    (``top_ids`` / ``top_logprobs`` add a trailing ``top_k`` axis, sorted best first)."""

    top_gap: torch.Tensor
    chosen_gap: torch.Tensor
    surprisal: torch.Tensor
    entropy: torch.Tensor
    rank: torch.Tensor
    top_ids: torch.Tensor
    top_logprobs: torch.Tensor


def _summarize(scores: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_probs, top_logprobs, top_ids, entropy)``; see :func:`top_candidates` for the top entries."""
    log_probs = numerics.log_softmax(scores)
    return log_probs, *top_candidates(log_probs, top_k), entropy_of_log_probs(log_probs)


def top_candidates(log_probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``max(top_k, 2)`` best log-probs and their ids (at least 2, for the top gap).

    When the vocabulary is narrower than that, the missing entries are ``-inf`` with id ``-1``.
    """
    wanted = max(top_k, 2)
    k = min(wanted, log_probs.shape[-1])
    top_logprobs, top_ids = log_probs.topk(k, dim=-1)
    if k < wanted:
        pad = (*top_ids.shape[:-1], wanted - k)
        top_logprobs = torch.cat([top_logprobs, top_logprobs.new_full(pad, numerics.NEG_INF)], dim=-1)
        top_ids = torch.cat([top_ids, top_ids.new_full(pad, -1)], dim=-1)
    return top_logprobs, top_ids


def entropy_of_log_probs(log_probs: torch.Tensor, work: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`numerics.entropy` of distributions already given as log-probabilities.

    ``numerics.entropy(scores)`` would compute the log-softmax a second time. This is its formula,
    ``-sum(p * log p)`` with masked entries (``p = 0``, ``log p = -inf``) contributing 0, on the
    log-probs we have, term for term the same numbers: clamping ``log p`` to the lowest finite
    float turns a masked term into ``0 * finite = 0`` (and keeps a NaN a NaN). ``work`` are two
    scratch tensors like ``log_probs`` to write into: :class:`~logit_processors.gaps.LogitGapMonitor` reuses them on
    every step instead of allocating ``[rows, vocab]`` temporaries.
    """
    p, finite_log_p = work if work is not None else (torch.empty_like(log_probs), torch.empty_like(log_probs))
    torch.exp(log_probs, out=p)
    torch.clamp_min(log_probs, torch.finfo(log_probs.dtype).min, out=finite_log_p)
    return -torch.mul(p, finite_log_p, out=p).sum(dim=-1)


def count_greater(values: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(values > threshold).sum(-1)`` (long), ``threshold`` broadcast against ``values [..., V]``.

    The comparison is written into a float tensor (``out``, may be ``values`` itself): on CPU a
    float-valued comparison is vectorized and a boolean one several times slower, and counts below
    2**24 are exact in float32.
    """
    if values.shape[-1] >= 1 << 24:
        return (values > threshold).sum(dim=-1)
    if out is None:
        out = values.new_empty(torch.broadcast_shapes(values.shape, threshold.shape))
    return torch.gt(values, threshold, out=out).sum(dim=-1).long()


def chosen_stats(
    log_probs: torch.Tensor, chosen: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and rank (tokens strictly more likely) of ``chosen`` in each row.

    ``out``: scratch like ``log_probs`` for the comparison (may be ``log_probs`` itself, which it
    then overwrites).
    """
    chosen_logprob = log_probs.gather(-1, chosen.unsqueeze(-1))
    rank = count_greater(log_probs, chosen_logprob, out)
    return chosen_logprob.squeeze(-1), rank


def gap_stats(scores: torch.Tensor, chosen: torch.Tensor | None = None, *, top_k: int = DEFAULT_TOP_K) -> GapStats:
    """Gap statistics of ``scores [..., V]`` (logits or log-probs, any float dtype) for ``chosen [...]``.

    Computed in float32 (float64 stays float64) on the scores' device. Without ``chosen`` the
    chosen-token statistics are ``nan`` and ``rank`` is ``-1``.

    Example:
        >>> import torch
        >>> s = gap_stats(torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([1]))
        >>> s.top_gap.item(), s.chosen_gap.item(), s.rank.item()   # a tie: both share rank 0
        (0.0, 0.0, 0)
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() < 1 or not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor of shape [..., vocab]; got {describe(scores)}")
    top_k = positive_int("top_k", top_k)
    log_probs, top_logprobs, top_ids, entropy = _summarize(scores, top_k)
    if chosen is None:
        chosen_logprob = torch.full_like(entropy, math.nan)
        rank = torch.full(entropy.shape, -1, dtype=torch.long, device=entropy.device)
    else:
        _check_chosen(chosen, scores)
        chosen_logprob, rank = chosen_stats(log_probs, chosen.to(log_probs.device))
    return assemble_stats(top_logprobs, top_ids, entropy, chosen_logprob, rank, top_k)


def assemble_stats(top_logprobs, top_ids, entropy, chosen_logprob, rank, top_k: int) -> GapStats:
    top1 = top_logprobs[..., 0]
    return GapStats(
        top_gap=top1 - top_logprobs[..., 1],
        chosen_gap=top1 - chosen_logprob,
        surprisal=-chosen_logprob,
        entropy=entropy,
        rank=rank,
        top_ids=top_ids[..., :top_k],
        top_logprobs=top_logprobs[..., :top_k],
    )


def _check_chosen(chosen: object, scores: torch.Tensor) -> None:
    if not isinstance(chosen, torch.Tensor) or chosen.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"chosen must be an integer tensor of token ids; got {describe(chosen)}")
    if tuple(chosen.shape) != tuple(scores.shape[:-1]):
        raise ValueError(
            f"chosen has shape {tuple(chosen.shape)} but scores {tuple(scores.shape)}; "
            f"chosen must have the scores' shape without the vocabulary axis, {tuple(scores.shape[:-1])}"
        )
    vocab = scores.shape[-1]
    if chosen.numel() and bool(((chosen < 0) | (chosen >= vocab)).any()):
        bad = chosen[(chosen < 0) | (chosen >= vocab)].unique()[:10].tolist()
        raise ValueError(f"chosen contains token ids {bad} outside 0..{vocab - 1} (scores have {vocab} columns)")
