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
from ..validate import positive_finite_float

Combine = Literal["logprob", "logodds"]
COMBINE_MODES: tuple[str, ...] = ("logprob", "logodds")


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
    subtracted ``sum(weights) - 1`` times. See :mod:`logit_processors.ensemble` for the two modes.

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


def special_tokens(tokenizer) -> dict[int, tuple[str, bool]]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i): (str(t), bool(getattr(t, "special", True))) for i, t in decoder.items()}


def head_width(model) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None
