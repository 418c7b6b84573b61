"""Temperature: divide logits by T. T < 1 sharpens, T > 1 flattens, T -> 0 approaches argmax.

Dividing by T keeps the order of the tokens (so the argmax) and multiplies every log-odds
between two tokens by 1/T: ``log(p_i / p_j) = (z_i - z_j) / T``.
"""

from __future__ import annotations

import threading

import torch

from .. import numerics
from ..core import DeviceCache, Processor, host_reads_are_free, scratch_pair
from ..validate import NanPolicy, check_nan_policy, per_row, positive_finite_float, score_value_error, unusable_rows

#: Temperatures below this are refused: in float32 they are indistinguishable from 0 (T -> 0 is
#: argmax: decode greedily instead).
MIN_TEMPERATURE = 1e-30


def divide_by_temperature(scores: torch.Tensor, temperature: float | torch.Tensor, owner: str = "Temperature",
                          on_nan: str = "raise", *, may_overflow: bool | None = None) -> torch.Tensor:
    """``scores / temperature`` as a new tensor of the scores' dtype: never NaN or ``+inf`` from
    finite scores, never a row left without a finite entry, masked ``-inf`` entries kept.

    ``temperature`` is a float or a float32 column ``[B, 1]`` on the scores' device;
    ``may_overflow`` whether any of it is below 1 (default: looked up, a host read for a column).

    float32 and float64 are divided directly, so the result equals ``scores / T`` to the last
    bit. Below ``T = 1`` that can overflow (``1e33 / 1e-6``): on the CPU the output's row maxima
    are read (one reduction, which also applies the input policy to the rows: ``owner`` and
    ``on_nan`` as for a processor), and a row that overflowed is computed again in float64 as
    ``(scores - max) / T``, clamped at the lowest finite value (softmax is shift-invariant: its
    distribution is unchanged, and tokens at the clamp had probability exactly 0). Where a read
    would sync the device, the same repair is chosen per row on the device, without a read (the
    input policy is then the processor's usual deferred check). A finite score
    more than ``T`` times the float range below zero becomes ``-inf``: its probability is exactly
    0 either way. Half precision (fp16's largest value is 65504) is always computed in float32
    after subtracting the row maximum, and clamped at the dtype's lowest finite value.

    Example:
        >>> import torch
        >>> divide_by_temperature(torch.tensor([[1e33, 0.0, -float("inf")]]), 1e-6).tolist()  # row shifted
        [[0.0, -3.4028234663852886e+38, -inf]]
    """
    if scores.dtype not in (torch.float32, torch.float64):
        scores32 = scores.float()
        scaled = (scores32 - numerics.finite_row_max(scores32)) / temperature
        lowest = torch.finfo(scores.dtype).min
        scaled = torch.where(scores32 == numerics.NEG_INF, scores32, scaled.clamp_min(lowest))
        return scaled.to(scores.dtype)
    out = scores / temperature
    if may_overflow is None:
        may_overflow = temperature < 1 if isinstance(temperature, float) else bool((temperature < 1).any())
    if not may_overflow:
        return out  # |scores / T| <= |scores|: nothing can overflow
    if not host_reads_are_free(scores.device):
        return _repair_rows_on_device(scores, out, temperature)
    rows = unusable_rows(out.amax(dim=-1).tolist())  # +inf: overflow or bad input; -inf: every entry underflowed
    if not rows:
        return out
    came_in = unusable_rows(scores[rows].amax(dim=-1).tolist())
    if came_in and on_nan == "raise":
        raise score_value_error(owner, scores, [rows[i] for i in came_in])
    overflowed = [row for i, row in enumerate(rows) if i not in set(came_in)]
    if overflowed:
        index = torch.tensor(overflowed, device=scores.device)
        column = temperature if isinstance(temperature, float) else temperature.index_select(0, index)
        out.index_copy_(0, index, _shifted_rows(scores.index_select(0, index), column))
    return out


def _shifted_rows(scores: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """``(scores - row max) / T`` computed in float64, clamped at the dtype's lowest finite value,
    masked ``-inf`` kept: the repair of rows whose plain division overflowed."""
    wide = scores.double()
    column = temperature if isinstance(temperature, float) else temperature.double()
    shifted = (wide - numerics.finite_row_max(wide)) / column
    lowest = torch.finfo(scores.dtype).min
    return torch.where(wide == numerics.NEG_INF, wide, shifted.clamp_min(lowest)).to(scores.dtype)


def _repair_rows_on_device(scores: torch.Tensor, out: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """The overflow repair without a host read: rows of ``out`` whose maximum is not finite while
    the scores' is take :func:`_shifted_rows` (computed for every row, kept where needed)."""
    overflowed = ~torch.isfinite(out.amax(dim=-1, keepdim=True)) & torch.isfinite(scores.amax(dim=-1, keepdim=True))
    return torch.where(overflowed, _shifted_rows(scores, temperature), out)


class Temperature(Processor):
    """Divide the logits by a temperature: one float, or one per row.

    Args:
        temperature: a positive finite float, or a 1-D tensor of per-row temperatures. A
            per-row tensor has one entry per batch row, or one per prompt when ``generate()``
            expands each prompt into several consecutive rows (``num_return_sequences``,
            ``num_beams``), in which case each entry covers its prompt's rows.

    ``Temperature(1.0)`` returns the scores unchanged (the same tensor object).

    Note: with ``do_sample=True``, Hugging Face applies ``generation_config.temperature`` (and
    top-k/top-p) *after* user processors; leave those at their defaults (1.0 / None) when you
    use this processor, or the two temperatures multiply.

    Example:
        >>> import torch
        >>> from logit_processors import Temperature
        >>> Temperature(0.5)(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[1.0, 2.0]])).tolist()
        [[2.0, 4.0]]
        >>> per_row = Temperature(torch.tensor([1.0, 2.0]))
        >>> per_row(torch.zeros(2, 1, dtype=torch.long), torch.tensor([[2.0, 4.0], [2.0, 4.0]])).tolist()
        [[2.0, 4.0], [1.0, 2.0]]
    """

    def __init__(self, temperature: float | torch.Tensor, *, on_nan: NanPolicy = "raise"):
        if isinstance(temperature, torch.Tensor):
            self.temperature = _check_per_row_temperatures(temperature)
        else:
            self.temperature = _at_least_min("temperature", positive_finite_float("temperature", temperature))
        self.on_nan = check_nan_policy(on_nan)
        self._cache = DeviceCache()
        t = self.temperature
        self._may_overflow = (t < 1) if isinstance(t, float) else bool((t < 1).any())

    keeps_scores_valid = True  # the division never makes NaN or +inf, nor a row without a finite entry

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        # Below 1 the division reads its output's row maxima anyway (float32/64 on the CPU, to
        # repair an overflow) and applies the input policy there: one reduction instead of two.
        return self._may_overflow and _reads_output(scores)

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if isinstance(self.temperature, float):
            if self.temperature == 1.0:
                return scores
            return divide_by_temperature(scores, self.temperature, type(self).__name__, self.on_nan,
                                         may_overflow=self._may_overflow)
        column = self._cache.get(scores.device, torch.float32, "t", lambda: self.temperature)
        column = per_row("temperature", column, scores.shape[0])[:, None]
        return divide_by_temperature(scores, column, type(self).__name__, self.on_nan, may_overflow=self._may_overflow)

    def _repr_fields(self) -> dict[str, object]:
        t = self.temperature
        return {"temperature": t if isinstance(t, float) else t.tolist()}


def _check_per_row_temperatures(temperature: torch.Tensor) -> torch.Tensor:
    if temperature.dim() != 1 or temperature.numel() == 0:
        raise ValueError(
            f"temperature as a tensor must be 1-D with one entry per row; got shape {tuple(temperature.shape)}"
        )
    values = temperature.detach().to("cpu", torch.float64)
    bad = ~(torch.isfinite(values) & (values >= MIN_TEMPERATURE))
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"temperature must be finite and at least {MIN_TEMPERATURE:g} in every row; rows {rows[:10]} have "
            f"{values[bad][:10].tolist()}"
        )
    return values.to(torch.float32)


class EntropyTemperature(Processor):
    """Dynamic temperature from each row's normalized entropy (llama.cpp "dynatemp").

    For each row, with ``H`` the entropy of ``softmax(scores)`` over its unmasked tokens and
    ``n`` their number::

        h = H / log(n)                                   # normalized entropy, in [0, 1]
        T = min_t + (max_t - min_t) * h ** exponent
        scores -> scores / T

    A confident row (``h`` near 0) is divided by ``min_t``; a near-uniform row (``h`` near 1)
    by ``max_t``. ``exponent`` > 1 keeps T near ``min_t`` until the row is quite uncertain.
    Origin: "Dynamic temperature" by kalomaze, merged into llama.cpp (PR #4972, 2024), and
    Zhang et al. (2024), "EDT: Improving Large Language Models' Generation by Entropy-based
    Dynamic Temperature Sampling" (arXiv:2403.14541).

    Example:
        >>> import torch
        >>> from logit_processors import EntropyTemperature
        >>> proc = EntropyTemperature(0.5, 1.5)
        >>> out = proc(torch.zeros(2, 1, dtype=torch.long), torch.tensor([[9.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> [round(x, 2) for x in out[:, 0].tolist()]   # confident row sharpened, flat row /1.5
        [17.92, 0.67]
    """

    def __init__(self, min_t: float, max_t: float, exponent: float = 1.0, *, on_nan: NanPolicy = "raise"):
        self.min_t = _at_least_min("min_t", positive_finite_float("min_t", min_t))
        self.on_nan = check_nan_policy(on_nan)
        self.max_t = positive_finite_float("max_t", max_t)
        if self.max_t < self.min_t:
            raise ValueError(f"max_t must be >= min_t; got min_t={self.min_t!r}, max_t={self.max_t!r}")
        self.exponent = positive_finite_float("exponent", exponent)
        # Scratch for the entropy, reused from step to step (see numerics.entropy's ``work``);
        # one pair per thread, so that one processor may serve several threads at once.
        self._scratch = threading.local()

    def row_temperatures(self, scores: torch.Tensor) -> torch.Tensor:
        """The temperature chosen for each row, float32 ``[B]``."""
        h = numerics.normalized_entropy(scores, work=self._work(scores))
        return self.min_t + (self.max_t - self.min_t) * h.pow(self.exponent)

    def _work(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        previous = getattr(self._scratch, "work", None)
        dtype = numerics.reduction_dtype(scores.dtype)
        self._scratch.work = scratch_pair(previous, scores.shape, dtype, scores.device)
        return self._scratch.work

    def reset(self) -> None:
        """Frees the scratch tensors (they are rebuilt at the next call)."""
        self._scratch = threading.local()

    def __getstate__(self) -> dict:  # copy and pickle without the scratch (a threading.local cannot be)
        return {k: v for k, v in self.__dict__.items() if k != "_scratch"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = threading.local()

    keeps_scores_valid = True  # as Temperature

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        return self.min_t < 1 and _reads_output(scores)  # as Temperature

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        column = self.row_temperatures(scores)[:, None]
        return divide_by_temperature(scores, column, type(self).__name__, self.on_nan, may_overflow=self.min_t < 1)

    def _repr_fields(self) -> dict[str, object]:
        return {"min_t": self.min_t, "max_t": self.max_t, "exponent": self.exponent}


def _reads_output(scores: torch.Tensor) -> bool:
    """Whether :func:`divide_by_temperature` below 1 reads these scores' output row maxima (and so
    applies the input policy): float32/64 where a host read is free. Half precision takes the
    shifted path, and on an accelerator the repair runs without a read: the base check then."""
    return scores.dtype in (torch.float32, torch.float64) and host_reads_are_free(scores.device)


def _at_least_min(name: str, temperature: float) -> float:
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"{name} must be at least {MIN_TEMPERATURE:g} (below, float32 cannot tell it from 0); got {temperature!r}. "
            "For the limit T -> 0 (always the most likely token) decode greedily"
        )
    return temperature
