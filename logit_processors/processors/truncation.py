"""Truncation samplers: keep only the head of the distribution (top-k, top-p, min-p).

All three remove the long tail of unlikely tokens, whose combined mass is what makes sampled
text drift into nonsense, and all three keep exactly the tokens that Hugging Face's
``TopKLogitsWarper``, ``TopPLogitsWarper`` and ``MinPLogitsWarper`` keep (ties and
``min_tokens_to_keep`` included), so switching between the two never changes a sample. They
differ only in how the cut is chosen:

* :class:`TopK`: a fixed number of tokens.
* :class:`TopP`: the smallest head whose probability mass reaches ``p`` (the nucleus).
* :class:`MinP`: every token at least ``p`` times as likely as the most likely one.

Removed tokens are set to ``-inf``; kept tokens keep their value exactly. Each processor always
keeps a row's most likely token, so a row can only end up fully masked if it arrived fully
masked; such a row goes to the ``on_empty`` policy of
:class:`~logit_processors.core.MaskingProcessor`. That is also why each row's top value is the
``witness`` of the policy check: B values are read instead of B x V.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import numerics
from ..core import MaskingProcessor
from ..numerics import NEG_INF
from ..validate import EmptyRowPolicy, NanPolicy, positive_int, probability


class TopK(MaskingProcessor):
    """Keep the ``k`` highest-scoring tokens of each row (Fan et al., 2018).

    Every token scoring at least the ``k``-th highest score is kept, so tokens tied with the
    ``k``-th are all kept and a row may keep more than ``k`` tokens, exactly as Hugging Face's
    ``TopKLogitsWarper``. A row with fewer than ``k`` unmasked tokens is left as it is.

    Args:
        k: how many tokens to keep (a positive integer).
        min_tokens_to_keep: keep at least this many; the effective k is ``max(k,
            min_tokens_to_keep)`` (as in Hugging Face).
        on_empty, eos_token_id: the fully-masked-row policy (see
            :class:`~logit_processors.core.MaskingProcessor`); a row can only be fully masked
            here if it arrived so.

    Paper: Fan, Lewis and Dauphin (2018), "Hierarchical Neural Story Generation" (ACL).

    Example:
        >>> import torch
        >>> from logit_processors import TopK
        >>> ids = torch.zeros(1, 1, dtype=torch.long)
        >>> TopK(2)(ids, torch.tensor([[1.0, 4.0, 2.0, 3.0]])).tolist()
        [[-inf, 4.0, -inf, 3.0]]
        >>> TopK(2)(ids, torch.tensor([[1.0, 4.0, 3.0, 3.0]])).tolist()   # a tie at the cut is kept
        [[-inf, 4.0, 3.0, 3.0]]
    """

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        return True  # its top-k values hold each row's maximum: the input policy from them

    def __init__(
        self,
        k: int,
        min_tokens_to_keep: int = 1,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        *,
        on_nan: NanPolicy = "raise",
    ):
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        self.k = positive_int("k", k)
        self.min_tokens_to_keep = positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(max(self.k, self.min_tokens_to_keep), scores.shape[-1])
        if k < scores.shape[-1] and scores.device.type == "cpu":
            # On CPU a [B, V] comparison plus a bool masked_fill costs ~12 copies of the scores
            # (bool tensors defeat vectorization). Writing the k winners into an all -inf
            # tensor costs half a copy. It keeps exactly k tokens, so it is only exact when no
            # tie straddles the cut: the (k+1)-th value must be strictly below the k-th
            # (checked per step; a NaN or -inf at the cut also takes the general path).
            top, where = torch.topk(scores, k + 1, dim=-1)
            self.check_values_from(scores, top[:, 0])  # the row maximum (topk puts NaN first)
            if bool((top[:, k] < top[:, k - 1]).all()):
                out = torch.full_like(scores, NEG_INF).scatter_(1, where[:, :k], top[:, :k])
                return self.finish(out, witness=top[:, 0])
            kth = top[:, k - 1 : k]
        else:
            # Unsorted: only the smallest of the k winners (the k-th) matters.
            top = torch.topk(scores, k, dim=-1, sorted=False).values
            self.check_values_from(scores, top.amax(dim=-1))  # the row maximum (NaN propagates)
            kth = top.amin(dim=-1, keepdim=True)
        out = scores.masked_fill(scores < kth, NEG_INF)
        return self.finish(out, witness=top.amax(dim=-1))

    def _repr_fields(self) -> dict[str, object]:
        return {"k": self.k, "min_tokens_to_keep": self.min_tokens_to_keep, "on_empty": self.on_empty}


class MinP(MaskingProcessor):
    """Keep the tokens whose probability is at least ``p`` times the top token's (Nguyen et al., 2024).

    The cut scales with the model's confidence: a peaked distribution keeps few tokens, a flat
    one keeps many. The computation is Hugging Face's ``MinPLogitsWarper``, step for step and in
    the scores' dtype (softmax, compare with ``p * max_prob``, then force-keep the
    ``min_tokens_to_keep`` most probable), so the result is bit-identical to it.

    Args:
        p: the minimum probability relative to the top token, in [0, 1]; typical values are
            0.05 to 0.1. ``p = 0`` keeps everything, ``p = 1`` keeps only the top token(s).
        min_tokens_to_keep: keep at least this many tokens per row.
        on_empty, eos_token_id: the fully-masked-row policy (see
            :class:`~logit_processors.core.MaskingProcessor`).

    Paper: Nguyen, Baker, Neo, Roush, Kirsch and Shwartz-Ziv (2024), "Turning Up the Heat:
    Min-p Sampling for Creative and Coherent LLM Outputs", arXiv:2407.01319.

    Example:
        >>> import math, torch
        >>> from logit_processors import MinP
        >>> probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
        >>> MinP(0.2)(torch.zeros(1, 1, dtype=torch.long), probs.log()).isinf().tolist()   # cut at 0.1
        [[False, False, False, True]]
    """

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        return True  # its top probabilities are NaN exactly for rows the input policy refuses

    def __init__(
        self,
        p: float,
        min_tokens_to_keep: int = 1,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        *,
        on_nan: NanPolicy = "raise",
    ):
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        self.p = probability("p", p)
        self.min_tokens_to_keep = positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        # Deliberately the same operations in the same order and dtype as Hugging Face: the
        # comparison is with rounded probabilities, and any reformulation (log space, a
        # threshold on logits) can round the other way at the cut.
        probs = torch.softmax(scores, dim=-1)
        top_probs = probs.amax(dim=-1, keepdim=True)
        self.check_values_from(scores, top_probs.squeeze(-1))  # NaN for NaN, +inf or no finite entry
        remove = probs < self.p * top_probs
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        if k > 1:
            # With k = 1 this would re-keep the top token, which is never removed (p <= 1, so
            # p * top <= top exactly): skipping it changes nothing and saves a top-k pass.
            remove.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        out = scores.masked_fill(remove, NEG_INF)
        # A fully masked (or NaN) row has NaN probabilities: not > 0, so it is flagged.
        return self.finish(out, witness=torch.where(top_probs > 0, top_probs, NEG_INF))

    def _repr_fields(self) -> dict[str, object]:
        return {"p": self.p, "min_tokens_to_keep": self.min_tokens_to_keep, "on_empty": self.on_empty}


class TopP(MaskingProcessor):
    """Nucleus sampling: keep the smallest head of tokens whose probability mass reaches ``p`` (Holtzman et al., 2020).

    Tokens are taken from the most probable down until their mass reaches ``p``; the token
    that crosses ``p`` is kept. The kept set is exactly that of Hugging Face's
    ``TopPLogitsWarper`` (which sorts ascending and removes tokens whose cumulative mass from
    the bottom is ``<= 1 - p``), including its float32 rounding, its order among tied scores,
    and ``min_tokens_to_keep``.

    Args:
        p: the nucleus mass, in [0, 1]. ``p = 1`` keeps every token of nonzero float32
            probability; ``p = 0`` keeps only ``min_tokens_to_keep`` tokens.
        min_tokens_to_keep: keep at least this many tokens per row.
        on_empty, eos_token_id: the fully-masked-row policy (see
            :class:`~logit_processors.core.MaskingProcessor`).

    How it avoids sorting the vocabulary (CPU). Each row is decided by the cheapest of three
    paths that is sure to agree with Hugging Face; ``path_counts`` counts the rows per path.

    1. ``"window"``: the nucleus is usually a few hundred tokens of a vocabulary of 10^5, so
       take the ``k`` best candidates with ``torch.topk``, their probabilities from one
       full-row normalizer, and find the cut in float64 within them. ``k`` starts at 256 and
       grows 8x while a row's nucleus does not fit (up to V/32); the size that sufficed is
       remembered for later calls. A row is decided here unless the tail mass at the cut is
       within ``1e-5 * (1 - p)`` of ``1 - p`` (where float32 rounding in Hugging Face's softmax
       and cumulative sum could tip the decision) or the cut splits tied scores.
    2. ``"value_sort"``: the remaining rows (a close call, or a nucleus larger than the window)
       run Hugging Face's softmax and cumulative sum on the row's values sorted by numpy, which
       gives the same ascending sequence as ``torch.sort`` (bit-identical probabilities and
       sums) at a small fraction of its cost; only the permutation differs, and it cannot
       matter unless the cut splits a tie.
    3. ``"full_sort"``: a row whose cut splits tied scores runs Hugging Face's exact algorithm
       (``torch.sort`` and scatter), since which tied tokens survive depends on its sort order.

    Dtypes and devices: float32 and float64 are matched against Hugging Face's warper in the
    same dtype. float16/bfloat16 scores are processed in float32, and the kept set equals
    Hugging Face's warper applied to ``scores.float()`` (its own half-precision cumulative sum
    is less accurate). Half-precision logits have many exact ties, so their cut often splits
    one and takes path 3. On accelerators, where choosing a path would need a host round trip
    per step, Hugging Face's algorithm (path 3) runs for the whole batch, on the device.

    Paper: Holtzman, Buys, Du, Forbes and Choi (2020), "The Curious Case of Neural Text
    Degeneration" (ICLR).

    Example:
        >>> import torch
        >>> from logit_processors import TopP
        >>> probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
        >>> TopP(0.7)(torch.zeros(1, 1, dtype=torch.long), probs.log()).isinf().tolist()   # 0.5 + 0.3 >= 0.7
        [[False, False, True, True]]
    """

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        return True  # its window's top values hold each row's maximum

    #: First candidate window; the nuclei of real LMs at p ~ 0.9 mostly fit in it.
    INITIAL_WINDOW = 256
    #: A window too small for some row is retried this much larger: fewer retries than
    #: doubling, and a CPU top-k with k << V costs little more for a larger k.
    GROWTH = 8
    #: Largest window, as a fraction of the vocabulary. Beyond ~V/32 candidates a top-k costs
    #: more than sorting the row's values with numpy (measured at V = 262,144: torch.topk of
    #: 16,384 about 2.4 ms a row, numpy's sort about 1 ms).
    WINDOW_LIMIT = 1 / 32
    #: Calls in a row whose nuclei would fit a smaller window before the remembered window
    #: shrinks: one flat distribution should not make every later step pay for a big window.
    SHRINK_AFTER = 32
    #: Decision margin: a cut is trusted when the tail mass differs from ``1 - p`` by more than
    #: ``REL_TOL * (1 - p) + ABS_TOL``. Hugging Face's float32 softmax normalizer (a float32
    #: sum) and per-token rounding put its tail mass within 2e-7 (Zipf-like logits) to 6e-7
    #: (flat logits) relative of ours, measured at V = 262,144; REL_TOL is 15-50x that. ABS_TOL
    #: covers our float64 cancellation when ``1 - p`` is 0.
    REL_TOL = 1e-5
    ABS_TOL = 1e-12

    def __init__(
        self,
        p: float,
        min_tokens_to_keep: int = 1,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        *,
        on_nan: NanPolicy = "raise",
    ):
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        self.p = probability("p", p)
        self.min_tokens_to_keep = positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.reset()

    def reset(self) -> None:
        """Forget the learned window size and the path counters."""
        self._window = self.INITIAL_WINDOW
        self._small_streak, self._streak_window = 0, 0
        self.path_counts = {"window": 0, "value_sort": 0, "full_sort": 0}

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        # Half precision is decided in float32 (the documented semantics); the upcast is exact,
        # so a comparison there selects the same tokens of the original tensor.
        work = numerics.as_float32(scores)
        if scores.device.type != "cpu":
            self.check_values_from(scores, work.amax(dim=-1))
            remove = _hf_top_p_removal(work, self.p, self.min_tokens_to_keep)
            self.path_counts["full_sort"] += scores.shape[0]
            return self.finish(scores.masked_fill(remove, NEG_INF), witness=work.amax(dim=-1))

        batch, vocab = work.shape
        # Per row: the lowest kept score (kept: every token >= it) and the number kept.
        threshold = torch.full((batch,), NEG_INF, dtype=work.dtype)
        kept = torch.ones(batch, dtype=torch.long)
        row_max, rest = self._by_window(work, threshold, kept)
        if row_max is not None:
            self.check_values_from(scores, row_max)  # the window's top: each row's maximum
        if rest.numel():
            full, rest_max = self._by_value_sort(work, rest, threshold, kept)
            if row_max is None:
                row_max = rest_max
                self.check_values_from(scores, row_max)
        else:
            full = rest
        remove = work < threshold[:, None]
        if full.numel():
            remove[full] = _hf_top_p_removal(work[full], self.p, self.min_tokens_to_keep)
            kept[full] = vocab - remove[full].sum(dim=-1)
        self.path_counts["window"] += batch - rest.numel()
        self.path_counts["value_sort"] += rest.numel() - full.numel()
        self.path_counts["full_sort"] += full.numel()
        self._learn(int(kept.max()) + 1)
        return self.finish(scores.masked_fill(remove, NEG_INF), witness=row_max)

    # Path 1 ------------------------------------------------------------------------------------

    def _by_window(
        self, work: torch.Tensor, threshold: torch.Tensor, kept: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Decide what rows it can from top-k windows; returns the row max and the other rows."""
        batch, vocab = work.shape
        pending = torch.arange(batch)
        window = self._window
        if window > vocab * self.WINDOW_LIMIT:
            return None, pending
        # Hugging Face compares its float32 cumulative mass with 1 - p rounded to float32.
        cutoff = float(torch.tensor(1.0 - self.p, dtype=work.dtype))
        top = torch.topk(work, window, dim=-1).values  # descending
        row_max = top[:, 0]
        shift = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))[:, None]
        # The counts exp(z - max), computed as a softmax does (in the work dtype, after
        # subtracting the max; its vectorized exp may differ in the last bit), summed in float64.
        # Hugging Face's probabilities are such counts over its own float32 sum, so its tail
        # masses agree with ours to ~1e-7 relative, however small the tail. A float32 normalizer would not do: its ~1e-7 relative error becomes an
        # absolute error on tail = 1 - head, larger than a tail of 1e-8 (p near 1), and a float32
        # log-sum-exp is off by ulp(|lse|), ~1e-6 for logits near 20. In place, so that only one
        # [B, V] temporary is allocated.
        normalizer = (work - shift).exp_().sum(dim=-1, dtype=torch.float64)
        close_calls = []
        while True:
            counts = torch.exp(top - shift[pending]).double()
            cut, status, n_kept = self._decide(top, counts, normalizer[pending], cutoff)
            done = status == _DONE
            threshold[pending[done]] = cut[done]
            kept[pending] = n_kept
            close_calls.append(pending[status == _CLOSE])
            pending = pending[status == _GROW]  # nucleus larger than the window
            window *= self.GROWTH
            if not pending.numel() or window > vocab * self.WINDOW_LIMIT:
                return row_max, torch.cat([*close_calls, pending])
            top = torch.topk(work[pending], window, dim=-1).values

    def _decide(
        self, top: torch.Tensor, counts: torch.Tensor, normalizer: torch.Tensor, cutoff: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each row of a descending window: the lowest kept score, a status, how many are kept.

        Hugging Face keeps a token when the mass of the token and everything below it (its
        ascending cumulative sum) exceeds ``1 - p``: the top-m tokens, m the number of
        candidates whose tail mass exceeds the cutoff, raised to ``min_tokens_to_keep``.
        """
        window = top.shape[-1]
        # Tail mass at and below each candidate, as 1 - (mass strictly above): float64, exact
        # to ~1e-16, so the only disagreement with Hugging Face is its own float32 rounding.
        tail = 1.0 - (counts.cumsum(dim=-1) - counts) / normalizer[:, None]
        m_p = (tail > cutoff).sum(dim=-1)  # `tail` is nonincreasing: a count is the cut position
        m = m_p.clamp_min(self.min_tokens_to_keep)
        fits = m < window  # the first removed candidate must be in the window to be checked
        first_out = m.clamp_max(window - 1)[:, None]
        next_score = top.gather(1, first_out).squeeze(1)
        cut_score = top.gather(1, (first_out - 1).clamp_min(0)).squeeze(1)
        tail_next = tail.gather(1, first_out).squeeze(1)
        tail_last_p = tail.gather(1, (m_p - 1).clamp_min(0)[:, None]).squeeze(1)
        # Hugging Face's float32 tail mass is within ~1e-6 (relative) of ours; decide only when
        # the cutoff is clearly on one side. Written so that NaN (from a NaN or +inf score)
        # fails every test and goes on to the exact paths.
        margin = self.REL_TOL * cutoff + self.ABS_TOL
        removal_sure = (cutoff - tail_next >= margin) | (next_score == NEG_INF)
        keep_sure = (m > m_p) | (tail_last_p - cutoff >= margin)
        no_split_tie = (cut_score > next_score) | (cut_score == NEG_INF)
        sure = removal_sure & keep_sure & no_split_tie
        status = torch.where(fits, torch.where(sure, _DONE, _CLOSE), _GROW)
        # A row that arrives fully masked keeps its (all -inf) scores; finish() decides.
        masked_row = top[:, 0] == NEG_INF
        status = torch.where(masked_row, _DONE, status)
        cut = torch.where(masked_row, torch.full_like(cut_score, NEG_INF), cut_score)
        return cut, status, m

    # Path 2 ------------------------------------------------------------------------------------

    def _by_value_sort(
        self, work: torch.Tensor, rows: torch.Tensor, threshold: torch.Tensor, kept: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hugging Face's arithmetic on numpy-sorted values; returns the rows needing path 3 and the rows' max."""
        vocab = work.shape[-1]
        ascending = torch.from_numpy(np.sort(work[rows].numpy(), axis=-1))
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        n_removed = (cumulative <= (1 - self.p)).sum(dim=-1)  # a prefix: the sums never decrease
        first_kept = n_removed.clamp_max(max(vocab - self.min_tokens_to_keep, 0))[:, None]
        cut = ascending.gather(1, first_kept).squeeze(1)
        below = ascending.gather(1, (first_kept - 1).clamp_min(0)).squeeze(1)
        top = ascending[:, -1]
        split_tie = (first_kept.squeeze(1) > 0) & (below == cut) & (cut > NEG_INF)
        # numpy and torch may order NaN differently, and +inf makes every probability NaN: leave
        # such rows to Hugging Face's own algorithm.
        unusual = torch.isnan(ascending).any(dim=-1) | (top == float("inf"))
        full = split_tie | unusual
        threshold[rows[~full]] = cut[~full]
        kept[rows] = vocab - first_kept.squeeze(1)
        row_max = torch.full((work.shape[0],), NEG_INF, dtype=work.dtype)
        row_max[rows] = torch.where(unusual, torch.full_like(top, float("nan")), top)
        return rows[full], row_max

    # Window size bookkeeping --------------------------------------------------------------------

    def _learn(self, needed: int) -> None:
        """Remember the window that would have fitted this call's largest nucleus.

        Grow at once (the retry was already paid); shrink only after ``SHRINK_AFTER`` calls in a
        row that would all have fitted a smaller window, to the largest of those.
        """
        fitting = self.INITIAL_WINDOW
        while fitting < needed:
            fitting *= self.GROWTH
        if fitting >= self._window:
            self._window = fitting
            self._small_streak, self._streak_window = 0, 0
            return
        self._small_streak += 1
        self._streak_window = max(self._streak_window, fitting)
        if self._small_streak >= self.SHRINK_AFTER:
            self._window = self._streak_window
            self._small_streak, self._streak_window = 0, 0

    def _repr_fields(self) -> dict[str, object]:
        return {"p": self.p, "min_tokens_to_keep": self.min_tokens_to_keep, "on_empty": self.on_empty}


_DONE, _CLOSE, _GROW = 0, 1, 2


def _hf_top_p_removal(scores: torch.Tensor, p: float, min_tokens_to_keep: int) -> torch.Tensor:
    """Hugging Face's ``TopPLogitsWarper`` removal mask, with the very same operations.

    Kept operation for operation (sort ascending, softmax, cumsum, compare with ``1 - p``,
    scatter back) so that rounding and the order among tied scores are Hugging Face's own.
    """
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative_probs <= (1 - p)
    sorted_remove[..., -min_tokens_to_keep:] = False
    return sorted_remove.scatter(1, sorted_indices, sorted_remove)
