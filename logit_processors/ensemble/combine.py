"""The ensemble's math on score tensors, and the check that two tokenizers agree on ids.

:func:`combine_log_probs` is what :class:`~logit_processors.LogOddsEnsemble` computes at each
step (see :mod:`logit_processors.ensemble` for the two modes and where they come from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from .. import numerics
from ..numerics import NEG_INF
from ..runtime.text_codec import TextCodec
from ..validate import positive_finite_float

Combine = Literal["logprob", "logodds", "mixture"]
COMBINE_MODES: tuple[str, ...] = ("logprob", "logodds", "mixture")


def combine_log_probs(
    scores: Sequence[torch.Tensor],
    weights: Sequence[float],
    combine: Combine = "logprob",
    temperatures: Sequence[float] | None = None,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ensemble's float32 log-probabilities ``[B, V]`` from each model's scores ``[B, V]``.

    ``scores[i]`` are model i's logits (or log-probs) over the same V tokens, divided by
    ``temperatures[i]`` (default 1); ``prior`` (``[V]`` or ``[B, V]`` scores, optional) is
    subtracted ``sum(weights) - 1`` times. See :mod:`logit_processors.ensemble` for the modes.
    ``"mixture"`` is the linear pool ``sum_i w_i p_i / sum_i w_i`` (weights >= 0, no prior); tokens
    the first scores (the primary's) mask stay masked, the others' mass on them is dropped.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0, -float("inf")]])
        >>> torch.allclose(combine_log_probs([z, z], [0.5, 0.5]), torch.log_softmax(z, -1))
        True
        >>> p = combine_log_probs([z, torch.tensor([[0.0, 3.0, 1.0]])], [1.0, 1.0]).exp()
        >>> [round(x, 3) for x in p[0].tolist()]   # e^(2+0), e^(0+3), masked: normalized
        [0.269, 0.731, 0.0]
    """
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
    if len(scores) != len(weights):
        raise ValueError(f"got {len(scores)} score tensors but {len(weights)} weights; they must match")
    temperatures = [1.0] * len(scores) if temperatures is None else list(temperatures)
    if len(temperatures) != len(scores):
        raise ValueError(f"got {len(scores)} score tensors but {len(temperatures)} temperatures; they must match")
    if all(w == 0 for w in weights):
        raise ValueError(f"at least one weight must be nonzero; got {list(weights)!r}")
    if combine == "mixture":
        check_mixture(weights, prior)
        return _mixture(scores, weights, temperatures)
    evidence = numerics.log_softmax if combine == "logprob" else numerics.log_odds_of_scores
    terms, used = [], []
    for s, w, t in zip(scores, weights, temperatures, strict=True):
        if w != 0:  # skipped entirely: a zero weight means "not in the ensemble"
            terms.append(evidence(numerics.shifted_by_temperature(s, t) if t != 1 else s))
            used.append(float(w))
    prior_weight = 1.0 - math.fsum(weights)
    if prior is not None and prior_weight != 0:
        terms.append(evidence(prior).expand_as(terms[0]))
        used.append(prior_weight)
    total = numerics.masked_weighted_sum(terms, used)
    if combine == "logodds":
        total = torch.nn.functional.logsigmoid(total)  # each token's combined probability, in log space
    return numerics.log_softmax(total)


def check_mixture(weights: Sequence[float], prior: object = None) -> None:
    """ValueError unless ``weights`` can weigh a linear mixture (all >= 0) and there is no prior."""
    if any(w < 0 for w in weights):
        raise ValueError(
            f"combine='mixture' needs weights >= 0 (a mixture cannot subtract a model); got {list(weights)!r}"
        )
    if prior is not None:
        raise ValueError("combine='mixture' takes no prior (it is a weighted average of probabilities, nothing is "
                         "counted twice); use combine='logprob' or 'logodds' with a prior")


def _mixture(scores, weights, temperatures) -> torch.Tensor:
    total_weight = math.fsum(weights)
    terms = [
        numerics.tempered_log_softmax(s, t) + math.log(w / total_weight)
        for s, w, t in zip(scores, weights, temperatures, strict=True) if w != 0
    ]
    mixed = torch.logsumexp(torch.stack(terms), dim=0)
    primary_masked = numerics.as_float32(scores[0]) == NEG_INF
    return numerics.log_softmax(mixed.masked_fill_(primary_masked, NEG_INF))


def row_weighted_mixture(log_probs: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """The linear pool with each row's own weights: ``log sum_i w_ri p_i`` from ``log_probs[i] [B, V]``
    (normalized log-probabilities, the primary's first) and ``weights [B, K]`` (rows summing to 1);
    tokens the primary masks stay masked, the others' mass on them is dropped (then renormalized)."""
    stacked = torch.stack([numerics.as_float32(x) for x in log_probs])  # [K, B, V]
    log_w = weights.to(device=stacked.device, dtype=stacked.dtype).log().T[:, :, None]
    mixed = torch.logsumexp(stacked + log_w, dim=0)
    return numerics.log_softmax(mixed.masked_fill_(stacked[0] == NEG_INF, NEG_INF))


def temperature_value(name: str, value: object) -> float:
    """A temperature as a float: a positive number, or anything with a ``.temperature`` attribute
    (e.g. a fitted :class:`logit_processors.calibration.CalibratedTemperature`)."""
    raw = getattr(value, "temperature", value)
    if isinstance(raw, torch.Tensor) and raw.numel() == 1:
        raw = raw.item()
    try:
        return positive_finite_float(name, raw)
    except ValueError:
        raise ValueError(
            f"{name} must be a positive finite number or an object with a .temperature attribute "
            f"(e.g. a fitted CalibratedTemperature); got {value!r}"
        ) from None


def check_same_vocabulary(tokenizers: Sequence[object], names: Sequence[str]) -> None:
    """ValueError unless every tokenizer maps tokens to ids identically (vocabulary and special tokens).

    Which token is EOS or PAD may differ (e.g. a base and an instruct checkpoint of one family):
    that is generation policy, set by the primary's generation config, not the id mapping.
    """
    reference, reference_name = tokenizers[0], names[0]
    vocab = reference.get_vocab()
    special = special_tokens(reference)
    for tokenizer, name in zip(tokenizers[1:], names[1:], strict=True):
        other = tokenizer.get_vocab()
        if other != vocab:
            differ = sorted({token for token, i in vocab.items() ^ other.items()}, key=lambda t: (vocab.get(t, 1 << 62), t))
            shown = ", ".join(f"{t!r}: {vocab.get(t)} vs {other.get(t)}" for t in differ[:6])
            raise ValueError(
                f"{name}'s tokenizer does not map tokens to the same ids as {reference_name}'s ({len(other)} vs "
                f"{len(vocab)} tokens; {len(differ)} differ, as {reference_name}'s id vs {name}'s: {shown}"
                f"{', ...' if len(differ) > 6 else ''}). Ensembled models must share one tokenizer"
            )
        other_special = special_tokens(tokenizer)
        if other_special != special:
            differ = sorted(special.items() ^ other_special.items())[:6]
            raise ValueError(
                f"{name}'s tokenizer has different special tokens than {reference_name}'s "
                f"(id, (token, special) in one but not the other: {differ}); ensembled models must share one tokenizer"
            )


def tokenizer_relation(primary, member, primary_name: str = "the primary model", member_name: str = "the member") -> str:
    """How a member's tokenizer relates to the primary's: ``"same"`` (the same ids for the same
    tokens: combined id by id) or ``"aligned"`` (another tokenizer: combined on text, through
    :mod:`logit_processors.runtime.aligned_members`). A ValueError for a pair that is neither
    (a tokenizer whose tokens' bytes cannot be read, so no text can be aligned).

    Example:
        >>> from logit_processors.models import load_tiny_gemma, load_tiny_gpt2
        >>> tokenizer, other = load_tiny_gpt2()[1], load_tiny_gemma()[1]
        >>> tokenizer_relation(tokenizer, tokenizer), tokenizer_relation(tokenizer, other)
        ('same', 'aligned')
    """
    try:
        check_same_vocabulary([primary, member], [primary_name, member_name])
        return "same"
    except ValueError as differ:
        reason = str(differ).split(". Ensembled models")[0].split("; ensembled models")[0]
    try:
        TextCodec.of(primary, f"{primary_name}'s tokenizer")
        TextCodec.of(member, f"{member_name}'s tokenizer")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{member_name} can be ensembled with {primary_name} neither id by id ({reason}) nor on text "
            f"({error})"
        ) from None
    return "aligned"


def special_tokens(tokenizer) -> dict[int, tuple[str, bool]]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i): (str(t), bool(getattr(t, "special", True))) for i, t in decoder.items()}


def head_width(model) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None
