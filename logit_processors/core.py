"""The processor contract: base class, chaining, caches and the fully-masked-row policy.

Every processor in this library:

* subclasses :class:`transformers.LogitsProcessor`, so it drops into ``model.generate(...,
  logits_processor=[...])`` and ``pipeline(...)``;
* takes ``input_ids [B, T]`` (long) and ``scores [B, V]`` (any float dtype, any device) and
  returns a **new** tensor, or the same object when it changes nothing; it never writes into
  the caller's tensor, because Hugging Face may hand out the very tensor it also returns as
  ``output_scores``;
* keeps precomputed masks and tables on the scores' device, cached per ``(device, dtype)``;
* is reusable across ``generate()`` calls; stateful processors expose :meth:`Processor.reset`
  and realign themselves from ``input_ids`` rather than trusting call order.

Example:
    >>> import torch
    >>> from logit_processors import Temperature, TokenMask
    >>> chain = Temperature(0.7) | TokenMask(deny=[0])
    >>> out = chain(torch.zeros(1, 1, dtype=torch.long), torch.randn(1, 5))
    >>> bool(out[0, 0] == float("-inf"))
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import numerics
from .numerics import NEG_INF
from .validate import EmptyRowPolicy, check_call, check_empty_policy, check_ids_in_range


class Processor(LogitsProcessor):
    """Base class: validates the call, then hands off to :meth:`process`.

    Subclasses implement ``process(input_ids, scores) -> scores`` and, when they hold state
    across steps, :meth:`reset`. ``a | b`` builds a :class:`Chain`.
    """

    # Exactly two parameters: LogitsProcessorList inspects the signature and would otherwise
    # demand extra keyword arguments from generate().
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        check_call(input_ids, scores)
        return self.process(input_ids, scores)

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-generation state. Stateless processors have none."""

    def __or__(self, other: LogitsProcessor) -> Chain:
        return Chain(self, other)

    def __ror__(self, other: LogitsProcessor) -> Chain:
        return Chain(other, self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict[str, object]:
        return {}


class Chain(LogitsProcessorList):
    """Processors applied left to right; itself usable directly as ``logits_processor=``.

    A ``Chain`` is a :class:`transformers.LogitsProcessorList` (so ``generate()`` accepts it as
    is) and flattens nested chains. ``reset()`` resets every member.

    Example:
        >>> import torch
        >>> from logit_processors import Chain, Temperature, TopK
        >>> chain = Chain(Temperature(0.5), TopK(2))
        >>> chain(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[3.0, 2.0, 1.0]])).tolist()
        [[6.0, 4.0, -inf]]
    """

    def __init__(self, *processors: LogitsProcessor | Iterable[LogitsProcessor]):
        flat: list[LogitsProcessor] = []
        for item in processors:
            if isinstance(item, (list, tuple)):
                flat.extend(item)
            else:
                flat.append(item)
        for i, proc in enumerate(flat):
            if not callable(proc):
                raise TypeError(f"Chain: processor #{i} is {proc!r}, which is not callable; expected a LogitsProcessor")
        super().__init__(flat)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        check_call(input_ids, scores)
        # Our own loop rather than LogitsProcessorList's, which runs inspect.signature on every
        # processor at every step; extra keyword arguments go only to processors that take them.
        for proc in self:
            scores = proc(input_ids, scores, **kwargs) if kwargs and _takes_kwargs(proc) else proc(input_ids, scores)
        return scores

    def reset(self) -> None:
        for proc in self:
            reset = getattr(proc, "reset", None)
            if callable(reset):
                reset()

    def __or__(self, other: LogitsProcessor) -> Chain:
        return Chain(*self, other)

    def __ror__(self, other: LogitsProcessor) -> Chain:
        return Chain(other, *self)

    def __repr__(self) -> str:
        return "Chain(" + ", ".join(repr(p) for p in self) + ")"


def _takes_kwargs(proc: object) -> bool:
    return len(inspect.signature(proc.__call__).parameters) > 2


# --------------------------------------------------------------------------------------------
# Per-(device, dtype) cache


class DeviceCache:
    """Tensors built once per ``(device, dtype, key)`` and reused on every later step.

    Building happens on the host (e.g. from a Python list of ids) and is copied to the device
    once; later steps only look up a dict.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[Hashable, ...], torch.Tensor] = {}

    def get(
        self, device: torch.device, dtype: torch.dtype | None, key: Hashable, build: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        cache_key = (str(device), dtype, key)
        tensor = self._tensors.get(cache_key)
        if tensor is None:
            tensor = build().to(device=device, dtype=dtype if dtype is not None else None)
            self._tensors[cache_key] = tensor
        return tensor

    def clear(self) -> None:
        self._tensors.clear()


def scratch_pair(
    previous: tuple[torch.Tensor, torch.Tensor] | None, shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two scratch tensors for a processor's per-step ``[B, V]`` work: ``previous`` while it still
    fits (same shape, dtype and device), else two new ones.

    Kept from step to step so that the step allocates no large temporaries: a large allocation
    repeated at every call is mapped fresh by the allocator and page-faulted each time.
    """
    if previous is not None and previous[0].shape == shape and previous[0].dtype == dtype and previous[0].device == device:
        return previous
    return torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# Fully masked rows


class MaskingProcessor(Processor):
    """Base for processors that remove tokens: applies the fully-masked-row policy.

    ``on_empty="raise"`` (default): a row left with every token at ``-inf`` raises a
    ValueError naming the row (this reads one bool per step back to the host; on CPU that is
    free). ``on_empty="keep_eos"``: such a row keeps only its EOS token(s) instead, computed
    on the device without any host round trip, so generation ends cleanly for that row.
    """

    def __init__(self, on_empty: EmptyRowPolicy = "raise", eos_token_id: int | Sequence[int] | None = None):
        self.on_empty = on_empty
        self._eos_ids = check_empty_policy(on_empty, eos_token_id)
        self._cache = DeviceCache()

    def finish(self, scores: torch.Tensor, witness: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the policy to a processed ``scores`` tensor that this processor owns.

        The full check reads every score. ``witness`` makes the common case cheap: values from
        ``scores``, ``[B]`` or ``[B, k]`` (e.g. one column this processor never masks, each
        row's top value, or the few kept values), such that a row can only be fully masked if
        all its witnesses are ``-inf``. When every witness is finite (one small reduction), no
        row is empty and the scan is skipped; otherwise (a flagged row, even a spurious one, or NaN) the full check runs.
        On an accelerator with ``keep_eos`` the witness is ignored: the full path needs no host
        round trip, the shortcut would.
        """
        if self.on_empty == "keep_eos":  # validates the EOS ids against the width at the first call
            eos_columns = self._cache.get(scores.device, torch.bool, ("eos", scores.shape[-1]), self._eos_columns(scores))
        if witness is not None and witness.numel() and (self.on_empty == "raise" or scores.device.type == "cpu"):
            # [B] or [B, k] (a row is safe when any of its k witnesses is finite; NaN propagates
            # through amax). The B values are read to the host in one copy and summed there:
            # the sum of Python floats is > -inf only when no value is -inf or NaN (+inf beside
            # -inf gives NaN, and a float64 sum that overflows is -inf: both go to the full check,
            # which is exact). Cheaper than amin + compare + bool: two tensor ops fewer on a
            # path that costs a few microseconds in all.
            row_witness = witness.amax(dim=-1) if witness.dim() == 2 else witness
            if sum(row_witness.tolist()) > NEG_INF:
                return scores
        empty = numerics.fully_masked_rows(scores)
        if self.on_empty == "keep_eos":
            restore = empty[:, None] & eos_columns[None, :]
            return scores.masked_fill(restore, 0.0)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(
                f"{type(self).__name__} masked every token in row(s) {rows[:20]} (batch of {scores.shape[0]}); "
                'nothing is left to sample. Relax the constraint or pass on_empty="keep_eos" with eos_token_id'
            )
        return scores

    def _eos_columns(self, scores: torch.Tensor) -> Callable[[], torch.Tensor]:
        def build() -> torch.Tensor:
            check_ids_in_range("eos_token_id", self._eos_ids, scores.shape[-1])
            columns = torch.zeros(scores.shape[-1], dtype=torch.bool)
            columns[self._eos_ids] = True
            return columns

        return build
