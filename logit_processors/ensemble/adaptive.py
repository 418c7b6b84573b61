"""Adaptive mixture weights: a sequential code whose weights learn, online, from the text coded so far.

A constant mixture ``sum_i w_i p_i`` fitted on other text is only as good as that text is like
this one (on CPython's licence, memorised by one model, the fitted weight is far from the best).
:class:`AdaptiveMixture` predicts each span (or token) ``t`` with weights that depend only on
spans ``< t``, so its total is an honest code length, and it is never much worse than the best
constant weight *in hindsight*:

* **a grid of weights** on the simplex: every ``w`` with ``w_i = k_i / steps``, ``sum k_i = steps``
  (two models, 20 steps: ``w_0 in {0, 0.05, ..., 1}``, 21 points; K models: ``C(steps + K - 1,
  K - 1)`` points). Each point ``j`` is an expert predicting ``sum_i w_ji p_i(span)``; the Bayesian
  mixture over experts predicts with the posterior mean weight ``sum_j pi_j w_j`` (the predictive
  of a mixture of linear mixtures is the linear mixture with the averaged weights).
* **fixed share** (Herbster & Warmuth, 1998, "Tracking the best expert"): after each update, a
  fraction ``alpha`` of the posterior is shared out evenly over the grid, so a weight that was
  bad early can recover when the text changes (a code for switching between experts).
* **a Bayesian mixture over switching rates** ``alpha in {0, 1e-4, 1e-3, 1e-2, 0.1}`` (Volf &
  Willems, 1998, "Switching between two universal source coding algorithms"; Koolen & de Rooij,
  2013, "Universal codes from switching strategies"): one posterior over (rate, grid point), each
  rate's share of it updated by how well that rate predicted; no rate is tuned.

Everything is in log space, float64 (:func:`logit_processors.numerics.logsumexp`).

**Regret bound** (exact, no approximation; ``R`` rates, ``G`` grid points, ``-ln prior(j)`` the
starting prior of grid point ``j``): the total code length of one document is at most
``min_j [L_j + ln R - ln prior(j)]`` nats, with ``L_j`` the code length of the constant weight
``w_j``; the rate-0 component alone is a Bayes mixture over the grid, and the mixture over rates
loses at most ``ln R`` against it. With the uniform prior that is ``ln R + ln G`` (two models,
defaults: ``ln 5 + ln 21 = 4.65`` nats) over the best constant grid weight; with a prior fitted on
other text (:meth:`AdaptiveMixture.fitted`, or :meth:`AdaptiveMixture.centered_at` given weights),
half uniform and half the fitted posterior, it is ``ln R + ln G + ln 2`` (5.34 nats) over the best
grid weight, and ``ln R + ln 2 - ln fitted(j)`` over each grid weight ``j`` the fit favours. The
best grid weight is within ``1/(2 steps)`` of the best constant weight; its extra cost is
measured, not bounded here.

**Restart per document.** Each document starts again from the prior, as each ``generate()`` call
and each row of a batch does (:class:`~logit_processors.LogOddsEnsemble` with ``adaptive=True``):
scoring and generation then use the same distribution, rows never share a history, and the bound
holds per document. What is learned across documents belongs in the prior, fitted on separate
text (:meth:`AdaptiveMixture.fitted`).

Example:
    >>> import math, torch
    >>> mixture = AdaptiveMixture(2)
    >>> mixture.n_grid, round(mixture.regret_bound(), 2)
    (21, 4.65)
    >>> spans = torch.tensor([[0.9, 0.1]] * 50).log()          # model 0 is always right
    >>> lengths, state = mixture.code_lengths(spans)
    >>> [round(w, 2) for w in mixture.weights(state)[0].tolist()]
    [0.99, 0.01]
    >>> best = -spans[:, 0].sum().item()                         # the constant weight (1, 0)
    >>> best <= lengths.sum().item() <= best + mixture.regret_bound()
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from .. import numerics
from ..runtime.members import continued_rows
from ..validate import finite_floats, positive_int, probability

#: Fixed-share switching rates the mixture averages over (0: no switching, a plain Bayes mixture).
RATES = (0.0, 1e-4, 1e-3, 1e-2, 0.1)
#: Grid resolution: weights are multiples of ``1 / STEPS``.
STEPS = 20


def simplex_grid(n_models: int, steps: int = STEPS) -> torch.Tensor:
    """Every weight vector with entries ``k_i / steps`` summing to 1, ``[points, n_models]`` float64,
    ordered with the first model's weight decreasing (two models: ``(1, 0), (0.95, 0.05), ...``)."""
    n_models, steps = positive_int("n_models", n_models), positive_int("steps", steps)
    points = [c for c in itertools.product(range(steps, -1, -1), repeat=n_models) if sum(c) == steps]
    return torch.tensor(points, dtype=torch.float64) / steps


class AdaptiveMixture:
    """Mixture weights learned online: a Bayes mixture over a weight grid with fixed-share switching,
    mixed over switching rates (see the module docstring for the code and its regret bound).

    Args:
        n_models: how many models are mixed (K).
        steps: grid resolution (weights are multiples of ``1 / steps``).
        rates: fixed-share rates, each in ``[0, 1)``, averaged with equal prior weight.
        prior: ``None`` (uniform over the grid) or a distribution over the grid points (``[G]``
            non-negative numbers); the starting prior is half uniform, half ``prior``.

    The state of one or more rows (documents, generation rows) is a ``[rows, R, G]`` float64
    tensor of log posterior probabilities over (rate, grid point): :meth:`start`, :meth:`update`,
    :meth:`weights`.
    """

    def __init__(self, n_models: int, *, steps: int = STEPS, rates: Sequence[float] = RATES,
                 prior: Sequence[float] | torch.Tensor | None = None):
        self.grid = simplex_grid(n_models, steps)
        self.steps = steps
        rates = finite_floats("rates", rates)
        if not rates:
            raise ValueError("rates must hold at least one switching rate in [0, 1); got none")
        self.rates = [probability(f"rates[{k}]", r, allow_one=False) for k, r in enumerate(rates)]
        self.prior = None if prior is None else _grid_distribution(prior, self.n_grid)
        start = torch.full((self.n_grid,), 1.0 / self.n_grid, dtype=torch.float64)
        if self.prior is not None:
            start = 0.5 * start + 0.5 * self.prior
        self._start = (start.log() - math.log(len(self.rates))).expand(len(self.rates), -1).clone()
        rate = torch.tensor(self.rates, dtype=torch.float64)[:, None]
        # log 0 = -inf: a model left out of a grid point; a rate of 0 shares nothing.
        self._tables = {torch.device("cpu"): (self.grid.log(), torch.log1p(-rate), rate.log() - math.log(self.n_grid))}

    @property
    def n_models(self) -> int:
        return self.grid.shape[1]

    @property
    def n_grid(self) -> int:
        return self.grid.shape[0]

    def regret_bound(self) -> float:
        """Nats per document over the best constant grid weight: ``ln R + ln G`` (``+ ln 2`` with a prior)."""
        return math.log(len(self.rates)) + math.log(self.n_grid) + (math.log(2.0) if self.prior is not None else 0.0)

    def start(self, rows: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        """The prior, as the state of ``rows`` rows: ``[rows, R, G]`` log-probabilities (on ``device``)."""
        return self._start.to(device).expand(rows, -1, -1).clone()

    def weights(self, state: torch.Tensor) -> torch.Tensor:
        """Each row's posterior mean weights ``[rows, K]`` (the weights its next prediction uses)."""
        return torch.exp(numerics.logsumexp(state, dim=1)) @ self.grid.to(state.device)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The log grid and the log rates on ``device``, copied there once (no copy per step)."""
        if device not in self._tables:
            self._tables[device] = tuple(t.to(device) for t in self._tables[torch.device("cpu")])
        return self._tables[device]

    def update(self, state: torch.Tensor, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observe one outcome per row: ``log_probs [rows, K]``, each model's log-probability of it.

        Returns the new state and the mixture's log-probability of the outcome ``[rows]`` (made with
        the weights of ``state``: minus the code length). A row where every model gave the outcome
        probability 0 keeps its state (and gets ``-inf``).
        """
        log_grid, keep, share = self._on(state.device)
        x = log_probs.to(device=state.device, dtype=torch.float64)
        expert = numerics.logsumexp(log_grid + x[:, None, :], dim=-1)  # [rows, G]: log sum_i w_ji p_i
        joint = state + expert[:, None, :]
        total = numerics.logsumexp(joint.flatten(1), dim=-1)  # [rows]: the prediction
        posterior = joint - total[:, None, None]
        rate_mass = numerics.logsumexp(posterior, dim=-1, keepdim=True)
        # Fixed share: each rate keeps its mass, a fraction alpha of it spread evenly over the grid.
        spread = (rate_mass + share).expand_as(posterior)
        shared = numerics.logsumexp(torch.stack([posterior + keep, spread]), dim=0)
        return torch.where(torch.isfinite(total)[:, None, None], shared, state), total

    def code_lengths(self, span_log_probs: torch.Tensor, state: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Code lengths (nats) ``[spans]`` of one document's spans, in order, from the prior (or
        ``state``, ``[1, R, G]``), and the final state. ``span_log_probs``: ``[spans, K]``."""
        x = _span_matrix(span_log_probs, self.n_models)
        state = self.start() if state is None else state
        lengths = torch.empty(x.shape[0], dtype=torch.float64)
        for t in range(x.shape[0]):
            state, log_p = self.update(state, x[t : t + 1])
            lengths[t] = -log_p[0]
        return lengths, state

    def score_documents(self, documents: Sequence[torch.Tensor]) -> tuple[float, list[list[float]]]:
        """Total code length (nats) of several documents, each from the prior, and each document's
        final posterior mean weights."""
        total, final = [], []
        for x in documents:
            lengths, state = self.code_lengths(x)
            total.append(float(lengths.sum()))
            final.append(self.weights(state)[0].tolist())
        return math.fsum(total), final

    @classmethod
    def fitted(cls, span_log_probs: torch.Tensor, **options) -> AdaptiveMixture:
        """A mixture whose prior is the grid's Bayes posterior (uniform start, no switching) after
        ``span_log_probs [spans, K]`` of separate fit text."""
        x = _span_matrix(span_log_probs, None)
        grid = simplex_grid(x.shape[1], options.get("steps", STEPS))
        log_likelihood = numerics.logsumexp(grid.log()[None] + x[:, None, :], dim=-1).sum(dim=0)
        return cls(x.shape[1], prior=torch.softmax(log_likelihood, dim=0), **options)

    @classmethod
    def centered_at(cls, weights: Sequence[float], **options) -> AdaptiveMixture:
        """A mixture whose prior is the grid point nearest ``weights`` (normalized to sum 1)."""
        w = torch.tensor(finite_floats("weights", weights), dtype=torch.float64)
        if bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError(f"weights must be >= 0 with a positive sum; got {w.tolist()}")
        grid = simplex_grid(len(w), options.get("steps", STEPS))
        prior = torch.zeros(grid.shape[0], dtype=torch.float64)
        prior[int((grid - w / w.sum()).abs().sum(dim=1).argmin())] = 1.0
        return cls(len(w), prior=prior, **options)

    def __repr__(self) -> str:
        prior = "uniform" if self.prior is None else "half uniform, half given"
        return f"AdaptiveMixture(n_models={self.n_models}, grid={self.n_grid}, rates={self.rates}, prior={prior})"


class AdaptiveRows:
    """Per-row adaptive weights inside ``generate()``: each row's posterior follows its own history.

    :meth:`weights_for` is called at every step with ``input_ids [B, T]`` and the models' log-probs
    ``[K, B, V]`` that step's mixture combines. When ``input_ids`` continue the previous call's rows
    (greedy, sampling, or beams that moved: :func:`~logit_processors.runtime.members.continued_rows`),
    each row takes its parent's posterior updated with each model's log-probability (at the parent's
    step) of the token the row gained; anything else (a new call, another batch) starts every row
    from the prior. The state is a function of the token histories, never of call order.
    """

    def __init__(self, mixture: AdaptiveMixture):
        self.mixture = mixture
        self.reset()

    def reset(self) -> None:
        self._history: torch.Tensor | None = None
        self._log_probs: torch.Tensor | None = None  # [K, B, V] of the previous step
        self._state: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def weights_for(self, input_ids: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """Each row's weights ``[B, K]`` (float64, on the device of ``log_probs``) for this step's
        ``log_probs [K, B, V]``. The posteriors stay on that device (no host round trip of their own)."""
        device = log_probs.device
        parents = continued_rows(self._history, input_ids) if self._log_probs is not None else None
        if parents is None:
            state = self.mixture.start(input_ids.shape[0], device)
        else:
            rows = torch.arange(input_ids.shape[0], device=device) if parents is True else parents.to(device)
            chosen = input_ids[:, -1].to(device)
            previous = self._log_probs.index_select(1, rows)
            width = previous.shape[-1]  # a token beyond the models' common range: no evidence, no update
            index = chosen.clamp(0, width - 1)[None, :, None].expand(previous.shape[0], -1, 1)
            picked = previous.gather(2, index)[:, :, 0].masked_fill((chosen >= width)[None, :], float("-inf"))
            state, _ = self.mixture.update(self._state.index_select(0, rows), picked.T)
        self._history, self._log_probs, self._state = input_ids.clone(), log_probs, state
        self.last_weights = self.mixture.weights(state)
        return self.last_weights


def check_adaptive(adaptive: object, combine: str, n_models: int) -> None:
    """The one check of an ``adaptive=`` argument (of :class:`~logit_processors.LogOddsEnsemble` and
    :func:`~logit_processors.ensemble.score_text.score_text`): ``False``, ``True`` or an
    :class:`AdaptiveMixture` of ``n_models`` models, with ``combine="mixture"``; else a ValueError."""
    if adaptive is False:
        return
    if not (adaptive is True or isinstance(adaptive, AdaptiveMixture)):
        raise ValueError(f"adaptive must be True, False or an AdaptiveMixture; got {adaptive!r}")
    if combine != "mixture":
        raise ValueError(f"adaptive weights are mixture weights: adaptive needs combine='mixture'; got {combine!r} "
                         "(use combine='mixture' with adaptive, or adaptive=False)")
    if isinstance(adaptive, AdaptiveMixture) and adaptive.n_models != n_models:
        raise ValueError(f"adaptive mixes {adaptive.n_models} models but the ensemble has {n_models} "
                         "(the primary and its members)")


def _grid_distribution(prior, n_grid: int) -> torch.Tensor:
    p = torch.as_tensor(prior, dtype=torch.float64).flatten() if not isinstance(prior, torch.Tensor) \
        else prior.detach().double().cpu().flatten()
    if p.shape[0] != n_grid or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise ValueError(f"prior must be {n_grid} finite non-negative numbers (one per grid point) with a positive "
                         f"sum; got {p.shape[0]} numbers")
    return p / p.sum()


def _span_matrix(span_log_probs: torch.Tensor, n_models: int | None) -> torch.Tensor:
    """``span_log_probs`` as a float64 CPU ``[spans, n_models]`` matrix (any width for ``None``)."""
    is_matrix = isinstance(span_log_probs, torch.Tensor) and span_log_probs.dim() == 2
    if not is_matrix or (n_models is not None and span_log_probs.shape[1] != n_models):
        shape = (tuple(span_log_probs.shape) if isinstance(span_log_probs, torch.Tensor)
                 else type(span_log_probs).__name__)
        width = "models" if n_models is None else n_models
        raise ValueError(f"span_log_probs must be a [spans, {width}] tensor of log-probabilities; got {shape}")
    x = span_log_probs.detach().to(torch.float64).cpu()
    if bool((x > 0).any()) or bool(torch.isnan(x).any()):
        raise ValueError("span_log_probs must be log-probabilities (<= 0, -inf allowed, no NaN)")
    return x


__all__ = ["RATES", "STEPS", "AdaptiveMixture", "AdaptiveRows", "check_adaptive", "simplex_grid"]
