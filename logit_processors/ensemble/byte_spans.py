"""Scoring a text on bytes, the unit every tokenizer shares: each model's and a mixture's bits per byte.

Two models with different tokenizers cut a text into different tokens, so their per-token
probabilities cannot be compared or combined position by position. Bytes are common ground:

1. each model encodes the text canonically (the ids its tokenizer produces; refused with an
   error naming the text if the tokens do not spell it back exactly) after its own start token
   (Gemma's ``<bos>``; SmolLM2's ``<|endoftext|>``...), and one teacher-forced pass gives the
   log-probability of every token (divided by a temperature first, if given);
2. the text is cut at the byte offsets where **both** tokenizations end a token (*common
   boundaries*); between two of them lies a *span*, and a model's log-probability of a span is
   the sum over its tokens inside it;
3. a **linear mixture** scores each span ``log(sum_i w_i p_i(span | text before))``, weights
   fitted by EM on separate text (:func:`fit_mixture_weights`).

What is exact: each member's figure is the exact probability of the text's *canonical*
tokenization, ``p(t_1..t_n) = prod p(t_k | t_<k)``, which is a lower bound on the text's
probability (the marginal over every tokenization that spells it, Phan et al., 2024, "Exact
Byte-Level Probabilities from Tokenized Language Models"); for models trained on canonical
tokenizations the other tokenizations carry little mass. A span's probability under a model is
exact in the same sense (the canonical tokens of the span, given the canonical tokens before it).

What is approximated: where spans end. A common boundary is found on the canonical tokenization
of the *whole* text, and whether a tokenizer ends a token at a byte can depend on the bytes
after it; so the mixture is a score of this text, not a sequential predictor that could have
produced it byte by byte, and it is not guaranteed to sum to 1 over all texts (in practice the
boundaries are word and punctuation edges, which rarely depend on what follows). The per-step
distribution that :class:`~logit_processors.LogOddsEnsemble` generates from is a proper one
(normalized over the primary's vocabulary at every step); :func:`logit_processors.ensemble.
generation_bits` scores it the same way, teacher-forced on the primary's tokenization.

Log-odds and products of experts across tokenizers: a weighted geometric pool of span
probabilities, ``prod_i p_i(span)^{w_i}`` with weights summing to 1, multiplies out along the
text to ``prod_i p_i(text)^{w_i}`` whatever the spans, so its bits per byte are the weighted mean
of the members' and never beat the better member: a product of experts gains only from the
per-step normalizer, and that exists only on one vocabulary (the primary's, in generation).

Example:
    >>> spans = common_boundaries([3, 6, 16], [3, 9, 16])     # token ends of two tokenizations
    >>> spans
    [3, 16]
    >>> span_log_probs([-1.0, -0.5, -0.25], [3, 6, 16], spans)
    [-1.0, -0.75]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..runtime.model_inputs import check_length
from ..runtime.streamed_logits import TeacherForcedLogits
from ..runtime.text_codec import TextCodec
from ..validate import finite_floats
from .combine import temperature_value

LOG2 = math.log(2.0)


def common_boundaries(ends_a: Sequence[int], ends_b: Sequence[int]) -> list[int]:
    """The byte offsets (> 0) where both tokenizations end a token, in order."""
    return sorted(set(ends_a).intersection(ends_b) - {0})


def span_log_probs(token_log_probs: Sequence[float], token_ends: Sequence[int],
                   boundaries: Sequence[int]) -> list[float]:
    """Each span's log-probability: the sum of the log-probabilities of the tokens ending inside it.

    ``boundaries`` are span ends (every one must be a token end); tokens past the last are left out.
    """
    out, total, k = [], 0.0, 0
    for log_p, end in zip(token_log_probs, token_ends, strict=True):
        if k == len(boundaries):
            break
        total += log_p
        if end == boundaries[k]:
            out.append(total)
            total, k = 0.0, k + 1
        elif end > boundaries[k]:
            raise ValueError(f"span end {boundaries[k]} is not the end of a token (a token ends at {end})")
    if k != len(boundaries):
        raise ValueError(f"only {k} of {len(boundaries)} span ends are ends of tokens")
    return out


@dataclass
class ScoredText:
    """One model's teacher-forced scores of one text: per-token log-probs (nats) and byte ends."""

    log_probs: list[float]
    ends: list[int]

    @property
    def n_bytes(self) -> int:
        return self.ends[-1] if self.ends else 0


def token_log_probs(model, codec: TextCodec, text: str, temperature: object = 1.0, *, start_ids=None) -> ScoredText:
    """``model``'s log-probability of every token of ``text``'s canonical encoding (teacher-forced,
    after ``start_ids``, default the codec's), divided by ``temperature`` first; float64 sums."""
    temperature = temperature_value("temperature", temperature)
    ids = codec.encode(text)
    if not ids:
        return ScoredText([], [])
    start = list(codec.start_ids if start_ids is None else start_ids)
    window = start + ids
    check_length(model, len(window), what=f"the text ({len(text)} characters)")
    out: list[float] = []
    for logits, targets in TeacherForcedLogits(model, [window], batch_size=1):
        z = logits.double() / temperature
        picked = z.gather(1, targets[:, None].to(z.device)).squeeze(1) - torch.logsumexp(z, dim=-1)
        out.extend(picked.tolist())
    # Positions before the text's first token predict the start tokens themselves: not text.
    return ScoredText(out[len(start) - 1:], codec.token_ends(ids))


@dataclass
class TextScores:
    """Span log-probabilities (nats) of several models on several texts, aligned on common boundaries.

    ``spans[d][i]``: model ``i``'s log-probabilities of the spans of text ``d``; ``n_bytes``: the
    texts' total length in bytes.
    """

    spans: list[list[list[float]]]
    n_bytes: int

    def member_bits_per_byte(self) -> list[float]:
        """Each model's bits per byte (its span log-probabilities add up to its whole text's)."""
        return [-math.fsum(x for text in self.spans for x in text[i]) / LOG2 / self.n_bytes
                for i in range(self.n_models)]

    @property
    def n_models(self) -> int:
        return len(self.spans[0]) if self.spans else 0

    def matrix(self) -> torch.Tensor:
        """``[spans, models]`` float64 log-probabilities of every span of every text."""
        rows = self.per_document()
        return torch.cat(rows) if rows else torch.zeros(0, self.n_models, dtype=torch.float64)

    def per_document(self) -> list[torch.Tensor]:
        """One ``[spans, models]`` float64 matrix per text that has spans, in order."""
        return [torch.tensor(text, dtype=torch.float64).T for text in self.spans if text and text[0]]

    def mixture_bits_per_byte(self, weights: Sequence[float]) -> float:
        """Bits per byte of the linear mixture ``sum_i w_i p_i`` per span (weights normalized to sum 1)."""
        log_w = torch.tensor(_mixture_weights(weights), dtype=torch.float64).log()
        return -float(torch.logsumexp(self.matrix() + log_w, dim=1).sum()) / LOG2 / self.n_bytes


def score_spans(models: Sequence, codecs: Sequence[TextCodec], texts: Sequence[str],
                temperatures: Sequence[object] | None = None) -> TextScores:
    """Every model's span log-probabilities on ``texts`` (each scored from its own start token)."""
    temperatures = [1.0] * len(models) if temperatures is None else list(temperatures)
    spans, n_bytes = [], 0
    for text in texts:
        scored = [token_log_probs(m, c, text, t) for m, c, t in zip(models, codecs, temperatures, strict=True)]
        boundaries = scored[0].ends
        for s in scored[1:]:
            boundaries = common_boundaries(boundaries, s.ends)
        n_bytes += len(text.encode("utf-8"))
        spans.append([span_log_probs(s.log_probs, s.ends, boundaries) for s in scored])
    return TextScores(spans, n_bytes)


def fit_mixture_weights(span_log_probs: torch.Tensor, *, iterations: int = 10_000,
                        tolerance: float = 1e-13) -> list[float]:
    """Mixture weights maximizing ``sum_s log sum_i w_i p_i(s)`` over spans, by EM (Dempster et al., 1977).

    ``span_log_probs``: ``[spans, models]`` log-probabilities. The log-likelihood is concave in the
    weights, and each EM step raises it; it stops when a step gains less than ``tolerance`` nats per
    span (EM slows down where a weight goes to 0, hence the generous ``iterations``; each is one
    ``[spans, models]`` pass).

    Example:
        >>> p = torch.tensor([[0.5, 0.1], [0.1, 0.5], [0.4, 0.4]]).log()
        >>> [round(w, 3) for w in fit_mixture_weights(p)]
        [0.5, 0.5]
    """
    x = span_log_probs.double()
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"span_log_probs must be a non-empty [spans, models] tensor; got shape {tuple(x.shape)}")
    n_models = x.shape[1]
    log_w = torch.full((n_models,), -math.log(n_models), dtype=torch.float64)
    previous = -math.inf
    for _ in range(iterations):
        joint = x + log_w
        total = torch.logsumexp(joint, dim=1, keepdim=True)
        likelihood = float(total.mean())
        log_w = torch.logsumexp(joint - total, dim=0) - math.log(x.shape[0])  # mean responsibilities
        if likelihood - previous < tolerance:
            break
        previous = likelihood
    return log_w.exp().tolist()


def _mixture_weights(weights: Sequence[float]) -> list[float]:
    weights = finite_floats("weights", weights)
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"mixture weights must be >= 0 with a positive sum; got {weights}")
    total = math.fsum(weights)
    return [w / total for w in weights]
