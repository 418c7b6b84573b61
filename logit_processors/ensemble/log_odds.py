"""``LogOddsEnsemble``: the primary model's scores combined with N member models inside ``generate()``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import numerics
from ..core import DeviceCache
from ..validate import NanPolicy, finite_floats
from .adaptive import AdaptiveMixture, AdaptiveRows, check_adaptive
from .combine import COMBINE_MODES, Combine, check_mixture, combine_log_probs, row_weighted_mixture, temperature_value
from .with_members import WithMemberModels


class LogOddsEnsemble(WithMemberModels):
    """Combine the primary model's scores with N member models: weighted log-probs or log-odds.

    Args:
        members: a causal LM or a list of them (any Hugging Face decoder-only LM). A member that
            shares the primary's tokenizer runs on the same token histories with its own KV cache;
            one with another tokenizer (given in ``tokenizer``) reads the same *text* in its own
            tokens, and its probability of each of the primary's tokens is computed from that
            (:mod:`logit_processors.runtime.aligned_members`).
        weights: N + 1 finite numbers, the primary's first. Negative weights subtract a model;
            a member with weight 0 is left out (not even run).
        combine: ``"logprob"`` (weighted product of experts), ``"logodds"`` (per-token log-odds
            added, then renormalized) or ``"mixture"`` (probabilities averaged with the weights,
            which must be >= 0); see :mod:`logit_processors.ensemble` for the math.
        prior: ``None``, a causal LM, or a fixed distribution (a ``[V]`` tensor of probabilities,
            renormalized over the shared tokens), subtracted ``sum(weights) - 1`` times.
        temperatures: ``None`` or N + 1 temperatures (numbers, or fitted calibration objects with
            a ``.temperature``), dividing each model's logits before combining.
        tokenizer: one tokenizer (the shared one) or a list of N + 1 (primary first; ``None``
            where unknown). A member's tokenizer either maps tokens identically (the same
            tokenizer: combined id by id) or is another tokenizer (aligned on text; the primary's
            must then be given). Sets the token range (padded LM head columns beyond it are
            masked) and, by default, ``pad_token_id``.
        pad_token_id: token whose leading run in a prompt is left padding (default: the
            tokenizer's, else the first member's generation config); see :meth:`set_attention_mask`.
        adaptive: ``combine="mixture"`` only. ``True``: the mixture weights learn online, per row,
            from each model's probability of the token the row actually got
            (:mod:`logit_processors.ensemble.adaptive`: a Bayes mixture over a weight grid with
            fixed-share switching), starting every row of every ``generate()`` call from a prior
            centred on ``weights`` (half uniform); or an
            :class:`~logit_processors.ensemble.adaptive.AdaptiveMixture` to start from. Every member
            runs (a weight of 0 is only where the prior starts). :attr:`adaptive_weights` holds each
            row's weights at the last step.

    Output: the ensemble's log-probabilities, in the dtype of the scores (computed in float32).

    Example:
        >>> from logit_processors import LogOddsEnsemble
        >>> from logit_processors.models import load_tiny_gpt2
        >>> primary, tokenizer = load_tiny_gpt2()
        >>> member, _ = load_tiny_gpt2(seed=1)
        >>> ensemble = LogOddsEnsemble(member, weights=[0.7, 0.3], tokenizer=tokenizer)
        >>> inputs = tokenizer(["The for statement"], return_tensors="pt")
        >>> out = primary.generate(**inputs, logits_processor=[ensemble], num_beams=4,
        ...                        do_sample=False, max_new_tokens=16)
        >>> ensemble.counts["reorder"] > 0                 # the member's cache followed the beams
        True
    """

    def __init__(
        self,
        members,
        weights: Sequence[float],
        combine: Combine = "logprob",
        prior=None,
        temperatures: Sequence[object] | None = None,
        tokenizer=None,
        *,
        pad_token_id: int | None = None,
        on_nan: NanPolicy = "raise",
        adaptive: bool | AdaptiveMixture = False,
    ):
        members = _model_list("members", members)
        if not members:
            raise ValueError("members must contain at least one model")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
        self.combine = combine
        self.weights = _weights(weights, len(members))
        if combine == "mixture":
            check_mixture(self.weights, prior)
        self._adaptive_rows = _adaptive_rows(adaptive, combine, self.weights)
        self.temperatures = _temperatures(temperatures, len(members))
        self._cache = DeviceCache()
        models, names = list(members), [f"member #{i}" for i in range(len(members))]
        # weight 0: left out (adaptive weights may move there: every member runs)
        run = [i for i, w in enumerate(self.weights[1:]) if w != 0 or self._adaptive_rows is not None]
        self._prior_log_probs = None
        self._prior_is_model = isinstance(prior, torch.nn.Module)
        if self._prior_is_model:
            models.append(prior)
            names.append("the prior model")
            if math.fsum(self.weights) != 1:  # else it would be subtracted zero times
                run.append(len(members))
        elif prior is not None:
            self._prior_log_probs = _prior_log_probs(prior)
        self._prior_runs = self._prior_is_model and math.fsum(self.weights) != 1
        # The sources combined at each step: the primary, then the members that run.
        self._used = [0, *(i + 1 for i in run if i < len(members))]
        super().__init__(models, names, run, tokenizer, pad_token_id, on_nan,
                         temperatures=[*self.temperatures[1:], 1.0][: len(models)],
                         primary_temperature=self.temperatures[0])

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"members": len(self.weights) - 1, "weights": self.weights, "combine": self.combine}
        if any(t != 1 for t in self.temperatures):
            fields["temperatures"] = self.temperatures
        if self._prior_is_model or self._prior_log_probs is not None:
            fields["prior"] = "model" if self._prior_is_model else "distribution"
        if self._adaptive_rows is not None:
            fields["adaptive"] = True
        return fields

    @property
    def adaptive_weights(self) -> torch.Tensor | None:
        """With ``adaptive``: each row's mixture weights ``[B, N + 1]`` at the last step (float64)."""
        return self._adaptive_rows.last_weights if self._adaptive_rows is not None else None

    def reset(self) -> None:
        """Free the member models' caches (and forget the adaptive weights' rows)."""
        super().reset()
        if self._adaptive_rows is not None:
            self._adaptive_rows.reset()

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        logits, width = self._member_logits(input_ids, scores)
        if self._adaptive_rows is not None:
            return self._finish(type(self).__name__, scores, self._adaptive_mixture(input_ids, scores, logits, width),
                                width)
        prior = logits.pop() if self._prior_runs else self._fixed_prior(width, scores.device)
        combined = combine_log_probs(
            [scores[:, :width], *logits],
            [self.weights[i] for i in self._used],
            self.combine,
            self._source_temperatures(),
            prior=prior,
        )
        return self._finish(type(self).__name__, scores, combined, width)

    def _adaptive_mixture(self, input_ids, scores, logits, width) -> torch.Tensor:
        """The mixture with each row's adaptive weights, which first learn from the token each row gained."""
        log_probs = [numerics.tempered_log_softmax(x, t)
                     for x, t in zip([scores[:, :width], *logits], self._source_temperatures(), strict=True)]
        weights = self._adaptive_rows.weights_for(input_ids, torch.stack(log_probs))
        return row_weighted_mixture(log_probs, weights)

    def _source_temperatures(self) -> list[float]:
        # Members read on text come as log-probs with their temperature applied.
        return [1.0 if i > 0 and self._is_aligned(i - 1) else self.temperatures[i] for i in self._used]

    def _fixed_prior(self, width: int, device: torch.device) -> torch.Tensor | None:
        if self._prior_log_probs is None:
            return None
        if self._prior_log_probs.shape[0] < width:
            raise ValueError(f"prior has {self._prior_log_probs.shape[0]} entries but the models share {width} tokens")
        return self._cache.get(device, torch.float32, ("prior", width), lambda: self._prior_log_probs[:width])


def _adaptive_rows(adaptive: object, combine: str, weights: list[float]) -> AdaptiveRows | None:
    """Per-row adaptive weights for ``adaptive`` (False: None), else a ValueError naming it."""
    check_adaptive(adaptive, combine, len(weights))
    if adaptive is False:
        return None
    return AdaptiveRows(adaptive if isinstance(adaptive, AdaptiveMixture) else AdaptiveMixture.centered_at(weights))


def _model_list(name: str, models: object) -> list:
    """A causal LM or a list of them, as a list; a TypeError naming ``name`` for anything else
    (a hub id or path is the usual mistake: load it first)."""
    if isinstance(models, torch.nn.Module):
        return [models]
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        raise TypeError(
            f"{name} must be a causal LM or a list of them (loaded models, e.g. from logit_processors.models.load); "
            f"got {type(models).__name__} {models!r}"
        )
    return list(models)


def _one_per_model(name: str, values, n_members: int) -> list:
    """``values`` as a list with one entry per model (the primary's first), else a ValueError naming ``name``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of {n_members + 1} entries (the primary's first); got {values!r}")
    if len(values) != n_members + 1:
        raise ValueError(
            f"{name} must have {n_members + 1} entries (the primary's first, then one per member); "
            f"got {len(values)}: {list(values)!r}"
        )
    return list(values)


def _weights(weights, n_members: int) -> list[float]:
    weights = finite_floats("weights", _one_per_model("weights", weights, n_members))
    if all(w == 0 for w in weights):
        raise ValueError(f"at least one weight must be nonzero; got {weights!r}")
    return weights


def _temperatures(temperatures, n_members: int) -> list[float]:
    if temperatures is None:
        return [1.0] * (n_members + 1)
    temperatures = _one_per_model("temperatures", temperatures, n_members)
    return [temperature_value(f"temperatures[{i}]", t) for i, t in enumerate(temperatures)]


def _prior_log_probs(prior: object) -> torch.Tensor:
    if not isinstance(prior, torch.Tensor) or prior.dim() != 1 or not prior.is_floating_point():
        raise ValueError(
            "prior must be None, a causal LM, or a [V] float tensor of probabilities; got "
            + (f"a tensor of shape {tuple(prior.shape)} and dtype {prior.dtype}" if isinstance(prior, torch.Tensor)
               else type(prior).__name__)
        )
    p = prior.detach().double().cpu()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise ValueError("prior must hold finite, non-negative probabilities with a positive sum")
    return p.log()  # log 0 = -inf: a token the prior rules out stays masked
