"""Fitting a temperature exactly in one streamed pass: the engine of :mod:`logit_processors.calibration`.

With ``β = 1/T``, the negative log-likelihood (NLL) of one position is ``log Z(β) - β z_y`` with
``log Z(β) = logsumexp(β z)``: convex in ``β`` (its second derivative is the variance of the
logits under ``softmax(β z)``). The NLL of a corpus needs every position's full logits, and a
corpus of 200,000 tokens over a 262,144-token vocabulary is 200 GB of float32 logits: they cannot
be kept, and recomputing them for each step of an optimizer costs a forward pass per step. So
each chunk of logits is used once, while it is in memory:

1. **Probe.** On the first chunk (at most 256 positions), the NLL is evaluated at inverse
   temperatures a factor of 2 apart (``T`` from 1/64 to 64); its minimum locates ``β̂`` roughly.
2. **One pass.** For every position, :func:`logit_processors.numerics.tempered_log_partition`
   gives ``log Z``, ``d log Z / dβ`` and ``d² log Z / dβ²`` at 7 nodes ``β̂ · 1.2^j``
   (``j = -3..3``, about ``0.58 β̂ .. 1.73 β̂``) and at ``β = 1``; the corpus NLL and its first
   two derivatives at each node are sums of these (float64): the whole corpus reduces to 24
   numbers.
3. **Solve.** The NLL's derivative changes sign in exactly one interval between two nodes
   (convexity). There, the quintic Hermite interpolant of the NLL (value, first and second
   derivative at both ends) is minimized. Its error shrinks as the sixth power of the node
   spacing: the fitted ``T`` agrees with the exact (Newton, in-memory) optimum to about ``1e-6``
   relative (tested against it and against a brute-force grid).

If the minimum lies outside the nodes (the first chunk was unrepresentative: its estimate is off
by more than a factor of ~1.7), another pass is made around a new estimate, with a warning.
Memory is one chunk of logits (at most :data:`~logit_processors.runtime.streamed_logits.CHUNK_ELEMENTS` = 2**24 floats, 64 MB) plus the
forward pass of one batch: the LM head is applied to the last hidden states chunk by chunk,
never to a whole ``[batch, length, vocabulary]`` tensor. The cost is one forward pass over the
text plus 8 ``exp`` passes over each position's logits (``benchmarks/calibration.py`` measures
the ratio to a plain forward pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import numerics
from ..validate import positive_finite_float

#: Probe: inverse temperatures 2^-6 .. 2^6 (T from 1/64 to 64), on at most this many positions.
PROBE_BETAS = tuple(2.0**j for j in range(-6, 7))
PROBE_POSITIONS = 256
#: Main pass: nodes at β̂ * NODE_RATIO^j for j in -NODE_SIDE..NODE_SIDE, plus β = 1.
NODE_RATIO = 1.2
NODE_SIDE = 3
MAX_PASSES = 4
#: optimal_temperature refuses a minimum at T above this (or below its inverse): degenerate data.
DEGENERATE_TEMPERATURE = 1e6

LogitChunks = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TemperatureFit:
    """The result of a temperature fit: ``temperature`` and the statistics saved with it.

    ``nll`` and ``nll_uncalibrated`` are mean NLL per position (nats) at the fitted temperature
    and at ``T = 1``; ``curve_temperatures`` / ``curve_nll`` the mean NLL at the evaluation nodes;
    ``interpolation_error`` the relative difference between the quintic and the cubic
    interpolants' minimizers (an upper estimate of the error of the quintic one).
    """

    temperature: float
    nll: float
    nll_uncalibrated: float
    positions: int
    passes: int = 1
    interpolation_error: float = 0.0
    curve_temperatures: list[float] = field(default_factory=list)
    curve_nll: list[float] = field(default_factory=list)


class _NodeSums:
    """Corpus NLL and its first two derivatives in β at fixed nodes, accumulated in float64."""

    def __init__(self, betas: Sequence[float]):
        self.betas = sorted({float(b) for b in betas})
        self.value = np.zeros(len(self.betas))
        self.slope = np.zeros(len(self.betas))
        self.curvature = np.zeros(len(self.betas))
        self.positions = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        _check_chunk(logits, targets)
        log_z, mean, variance = numerics.tempered_log_partition(logits, self.betas)
        chosen = logits.gather(-1, targets.to(logits.device).long()[:, None]).double()  # [R, 1]
        betas = torch.tensor(self.betas, dtype=torch.float64, device=log_z.device)
        self.value += (log_z - betas * chosen).sum(0).cpu().numpy()
        self.slope += (mean - chosen).sum(0).cpu().numpy()
        self.curvature += variance.sum(0).cpu().numpy()
        self.positions += int(targets.shape[0])


def _check_chunk(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [N, V]; got {logits!r:.80}")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != (logits.shape[0],):
        raise ValueError(f"targets must be a tensor [N] with N = {logits.shape[0]}; got {targets!r:.80}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets must be token ids in 0..{logits.shape[1] - 1}")


@dataclass
class _Solution:
    beta: float | None  # None: the minimum is outside the nodes
    nll_sum: float = math.nan
    error: float = 0.0
    next_center: float = math.nan


def _solve(sums: _NodeSums) -> _Solution:
    """Minimize the corpus NLL between the nodes (see the module docstring)."""
    b, f, g, h = sums.betas, sums.value, sums.slope, sums.curvature
    if g[0] > 0 or g[-1] < 0:  # the minimum is below the first node or above the last
        edge = 0 if g[0] > 0 else -1
        newton = b[edge] - g[edge] / h[edge] if h[edge] > 0 else math.nan
        low, high = (b[0] / 4, b[0]) if edge == 0 else (b[-1], b[-1] * 4)
        center = min(max(newton, low), high) if math.isfinite(newton) else (low if edge == 0 else high)
        return _Solution(beta=None, next_center=center)
    k = next(i for i in range(len(b) - 1) if g[i] <= 0 <= g[i + 1])
    step = b[k + 1] - b[k]
    t, value = _quintic_minimum(f[k + 1] - f[k], step * g[k], step * g[k + 1], step**2 * h[k], step**2 * h[k + 1])
    t_cubic = _cubic_root(step * g[k], step * g[k + 1], step**2 * h[k], step**2 * h[k + 1])
    beta = b[k] + t * step
    return _Solution(beta=float(beta), nll_sum=float(f[k] + value), error=float(abs(t - t_cubic) * step / beta))


def _quintic_minimum(rise: float, d0: float, d1: float, c0: float, c1: float) -> tuple[float, float]:
    """Minimize on ``[0, 1]`` the quintic ``p`` with ``p(0) = 0, p(1) = rise``, ``p'`` = d0, d1 and
    ``p''`` = c0, c1 at the ends (``d0 <= 0 <= d1``); returns ``(t, p(t))``."""
    a1, a2 = d0, c0 / 2
    # The remaining coefficients a3, a4, a5 from the three conditions at t = 1.
    a3, a4, a5 = np.linalg.solve(
        np.array([[1.0, 1.0, 1.0], [3.0, 4.0, 5.0], [6.0, 12.0, 20.0]]),
        np.array([rise - a1 - a2, d1 - a1 - 2 * a2, c1 - 2 * a2]),
    )
    p = np.polynomial.Polynomial([0.0, a1, a2, a3, a4, a5])
    candidates = [0.0, 1.0] + [float(r.real) for r in p.deriv().roots() if abs(r.imag) < 1e-12 and 0 <= r.real <= 1]
    t = min(candidates, key=lambda x: float(p(x)))
    return t, float(p(t))


def _cubic_root(d0: float, d1: float, c0: float, c1: float) -> float:
    """Root in ``[0, 1]`` of the cubic Hermite interpolant of the derivative (``d0 <= 0 <= d1``)."""
    q = np.polynomial.Polynomial([d0, c0, 3 * (d1 - d0) - 2 * c0 - c1, 2 * (d0 - d1) + c0 + c1])
    roots = [float(r.real) for r in q.roots() if abs(r.imag) < 1e-12 and -1e-12 <= r.real <= 1 + 1e-12]
    return min(roots, key=lambda x: abs(x - 0.5)) if roots else (0.0 if abs(d0) < abs(d1) else 1.0)


def _probe(logits: torch.Tensor, targets: torch.Tensor) -> float:
    sums = _NodeSums(PROBE_BETAS)
    sums.add(logits[:PROBE_POSITIONS], targets[:PROBE_POSITIONS])
    solution = _solve(sums)
    if solution.beta is None:
        raise ValueError(
            f"the NLL is smallest at a temperature outside [{1 / PROBE_BETAS[-1]}, {1 / PROBE_BETAS[0]}] on the first "
            "positions: the model is degenerate on this data (or the targets do not belong to these logits)"
        )
    return solution.beta


def fit_temperature(
    chunks: Callable[[], LogitChunks] | LogitChunks,
    *,
    initial_temperature: float | None = None,
) -> TemperatureFit:
    """The temperature minimizing the mean NLL over streamed ``(logits [R, V], targets [R])`` chunks.

    ``chunks`` is a callable returning a fresh iterable of chunks (called once per pass; usually
    one pass), or a re-iterable such as a list or :class:`TeacherForcedLogits`. Each chunk is
    used once, while it is in memory; see the module docstring for the method.
    ``initial_temperature`` skips the probe and centers the nodes there.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = 3 * torch.randn(20_000, 10, generator=g)
        >>> labels = torch.multinomial(torch.softmax(logits / 2.0, -1), 1, generator=g).squeeze(1)
        >>> chunks = [(logits[i : i + 1000], labels[i : i + 1000]) for i in range(0, 20_000, 1000)]
        >>> round(fit_temperature(chunks).temperature, 1)   # labels drawn at T = 2
        2.0
    """
    make = chunks if callable(chunks) else (lambda: chunks)
    center = None if initial_temperature is None else 1.0 / positive_finite_float("initial_temperature", initial_temperature)
    uncalibrated = None
    for passes in range(1, MAX_PASSES + 1):
        sums = None
        for logits, targets in make():
            if sums is None:
                if center is None:
                    _check_chunk(logits, targets)
                    center = _probe(logits, targets)
                sums = _NodeSums([center * NODE_RATIO**j for j in range(-NODE_SIDE, NODE_SIDE + 1)] + [1.0])
            sums.add(logits, targets)
        if sums is None or sums.positions == 0:
            raise ValueError("no positions to fit the temperature on (the chunks were empty)")
        uncalibrated = float(sums.value[sums.betas.index(1.0)]) / sums.positions
        solution = _solve(sums)
        if solution.beta is not None:
            return TemperatureFit(
                temperature=1.0 / solution.beta,
                nll=solution.nll_sum / sums.positions,
                nll_uncalibrated=uncalibrated,
                positions=sums.positions,
                passes=passes,
                interpolation_error=solution.error,
                curve_temperatures=[1.0 / b for b in sums.betas],
                curve_nll=(sums.value / sums.positions).tolist(),
            )
        warnings.warn(
            f"temperature fit: the NLL minimum lies outside the nodes around T = {1 / center:.4g} estimated on the "
            f"first positions; taking another pass around T = {1 / solution.next_center:.4g}",
            stacklevel=2,
        )
        center = solution.next_center
    raise RuntimeError(f"temperature fit did not bracket the NLL minimum in {MAX_PASSES} passes")


def optimal_temperature(logits: torch.Tensor, labels: torch.Tensor, *, tolerance: float = 1e-10) -> float:
    """The NLL-minimizing temperature of in-memory ``logits [N, V]`` for ``labels [N]``, by safeguarded
    Newton iterations on ``β = 1/T`` (the NLL is convex in ``β``). The reference the streaming
    :func:`fit_temperature` is tested against; also the direct fit for a classifier's logits.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
        >>> round(optimal_temperature(logits, torch.tensor([0, 0, 1, 1])), 4)   # right 3 times in 4
        1.8205
    """
    _check_chunk(logits, labels)
    if labels.numel() == 0:
        raise ValueError("optimal_temperature needs at least one (logits, label) pair; got none")
    chosen = logits.gather(-1, labels.long()[:, None]).double()

    def derivatives(beta: float) -> tuple[float, float]:
        _, mean, variance = numerics.tempered_log_partition(logits, [beta])
        return float((mean - chosen).sum()), float(variance.sum())

    low, high = 0.0, math.inf  # the root of the derivative is in (low, high)
    beta = 1.0
    for _ in range(200):
        slope, curvature = derivatives(beta)
        if slope > 0:
            high = beta
        else:
            low = beta
        step = slope / curvature if curvature > 0 else math.nan
        candidate = beta - step if math.isfinite(step) else math.nan
        if not (low < candidate < high):  # Newton left the bracket: bisect (or expand it)
            candidate = (low + high) / 2 if math.isfinite(high) else max(2 * beta, 1.0)
        if abs(candidate - beta) <= tolerance * beta or high - low <= tolerance * beta:
            return 1.0 / candidate
        if high < 1 / DEGENERATE_TEMPERATURE or low > DEGENERATE_TEMPERATURE:
            raise ValueError(
                f"the NLL is smallest at a temperature {'above' if high < 1 else 'below'} "
                f"{DEGENERATE_TEMPERATURE if high < 1 else 1 / DEGENERATE_TEMPERATURE:g}: the logits are degenerate on "
                "these labels (unrelated to them, or always right)"
            )
        beta = candidate
    raise RuntimeError("optimal_temperature: Newton iterations did not converge")
