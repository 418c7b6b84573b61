"""The processor contract: base class, chaining, caches, the input policy and the fully-masked-row policy.

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

Bad input, defined once here for every processor (:meth:`Processor.__call__`):

* **Structure** (checked on every call, from metadata only): ``scores`` a 2-D float tensor with at
  least one column, ``input_ids`` a 2-D integer tensor with as many rows, neither on the
  ``meta`` device. Anything else is a ``ValueError`` that names the processor and the argument.
* **An empty batch** (``B = 0``) returns the scores unchanged: there is nothing to process.
* **Values** (``on_nan="raise"``, the default of every processor): scores must be finite or
  ``-inf`` (masked), with at least one finite entry per row. A row holding NaN, ``+inf``, or only
  ``-inf`` raises a ``ValueError`` naming the processor, the row, the value and its column;
  nothing is silently turned into a valid-looking distribution. The check is one read-only
  reduction over the scores (a row maximum: NaN and ``+inf`` propagate through it). On the CPU its
  ``B`` values are read at once; on a CUDA device they are copied without blocking and read at
  the next call (or by :func:`raise_pending_checks`), so the check never adds a host sync per
  step. A masking processor with ``on_empty="keep_eos"`` accepts rows that arrive with every
  token masked (it restores their EOS, as for rows it empties itself).
  ``on_nan="pass"`` skips the check for speed; then NaN and ``+inf`` are not looked for: a
  masking processor still never takes a NaN row for an empty one (it never overwrites its EOS),
  and what else a processor makes of them is undefined.

Example:
    >>> import torch
    >>> from logit_processors import Temperature, TokenMask
    >>> chain = Temperature(0.7) | TokenMask(deny=[0])
    >>> out = chain(torch.zeros(1, 1, dtype=torch.long), torch.randn(1, 5))
    >>> bool(out[0, 0] == float("-inf"))
    True
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import numerics
from .numerics import NEG_INF
from .validate import (
    EmptyRowPolicy,
    NanPolicy,
    check_call,
    check_empty_policy,
    check_ids_in_range,
    check_nan_policy,
    describe,
    score_value_error,
    unusable_rows,
)


class Processor(LogitsProcessor):
    """Base class: validates the call (the input policy above), then hands off to :meth:`process`.

    Subclasses implement ``process(input_ids, scores) -> scores`` and, when they hold state
    across steps, :meth:`reset`; they store the ``on_nan`` they are given with
    ``self.on_nan = check_nan_policy(on_nan)``. ``a | b`` builds a :class:`Chain`.
    """

    #: The value policy (see the module docstring); every processor takes ``on_nan=`` too.
    on_nan: NanPolicy = "raise"

    # Exactly two parameters: LogitsProcessorList inspects the signature and would otherwise
    # demand extra keyword arguments from generate().
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return self.apply(input_ids, scores, input_checked=VALIDATED.holds(scores))

    def apply(self, input_ids: torch.LongTensor, scores: torch.Tensor, *, input_checked: bool = False) -> torch.Tensor:
        """The call, with what the caller knows: ``input_checked=True`` when ``scores`` are exactly
        what a processor returned after applying the input policy (a :class:`Chain` knows this of
        its members' outputs), so that the value check is not repeated."""
        check_call(input_ids, scores, type(self).__name__)
        if scores.shape[0] == 0:  # an empty batch: nothing to process
            return scores
        if self.on_nan == "raise" and not input_checked and not self.checks_own_values(scores):
            check_scores(type(self).__name__, scores, empty_rows_allowed=self.accepts_empty_rows)
        out = self.process(input_ids, scores)
        if self.output_is_checked:
            VALIDATED.remember(out)
        return out

    #: Whether, given scores that satisfy the input policy, :meth:`process` returns scores that
    #: satisfy it too (finite or ``-inf``, a finite entry per row). Then the next processor of a
    #: chain, handed this very output, skips the value check: one check per step, not per processor.
    keeps_scores_valid: bool = False

    @property
    def output_is_checked(self) -> bool:
        """Whether this processor's outputs satisfy the input policy (it checks, and keeps it)."""
        return self.on_nan == "raise" and self.keeps_scores_valid

    @property
    def accepts_empty_rows(self) -> bool:
        """Whether rows that arrive with every token at ``-inf`` are this processor's to handle."""
        return False

    def checks_own_values(self, scores: torch.Tensor) -> bool:
        """Whether :meth:`process` applies the value policy to these ``scores`` itself (from a
        reduction it needs anyway), so that the base class need not read them a second time."""
        return False

    def check_values_from(self, scores: torch.Tensor, detector: torch.Tensor) -> None:
        """The input policy from ``detector [B]``, values this processor computed anyway that are
        non-finite exactly where a row of ``scores`` holds NaN or ``+inf`` or no finite entry (a
        row maximum, a top probability): ``B`` values read instead of a pass over the scores; the
        exact check runs only when one is non-finite (to name the row, or to let through a row
        that arrives empty to a ``keep_eos`` processor). On CUDA, the deferred exact check."""
        if self.on_nan != "raise":
            return
        if PENDING.defers(scores.device) or not math.isfinite(sum(detector.tolist())):
            check_scores(type(self).__name__, scores, empty_rows_allowed=self.accepts_empty_rows)

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

    # Exactly two parameters, like a processor: a Chain inside a LogitsProcessorList (or a list
    # given to generate()) is called as one; HF would demand extra keyword arguments otherwise.
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        check_call(input_ids, scores, "Chain")
        # Our own loop rather than LogitsProcessorList's, which runs inspect.signature on every
        # processor at every step. What a member returns is checked: a wrong return value stops
        # here, named, instead of failing somewhere later.
        # Between two members nothing else touches the scores: a member handed what a checked
        # member returned skips the value check (see ValidatedScores; this also holds for
        # inference tensors, which have no version counter).
        input_checked = VALIDATED.holds(scores)
        for index, proc in enumerate(self):
            if isinstance(proc, Processor):
                out = proc.apply(input_ids, scores, input_checked=input_checked)
                input_checked = proc.output_is_checked
            else:
                out = proc(input_ids, scores)
                input_checked = False
            if out is not scores and not (
                isinstance(out, torch.Tensor) and out.shape == scores.shape and out.is_floating_point()
            ):
                raise TypeError(
                    f"Chain: processor #{index} ({type(proc).__name__}) returned {describe(out)}; a processor "
                    f"must return a float tensor shaped like its scores {tuple(scores.shape)}"
                )
            scores = out
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


# --------------------------------------------------------------------------------------------
# The value check


class ValidatedScores(threading.local):
    """The last scores a processor returned after applying the input policy (one per thread).

    A chain ``Temperature(0.7) | TokenMask(...) | TopP(0.9)`` then checks its input once: each
    later member is handed exactly the tensor its predecessor returned, and re-reading it would
    cost a pass over the scores per processor (half a copy for a mask, whose own work is about
    one). What is remembered is the tensor itself (weakly: nothing is kept alive) and its version
    counter, which every in-place write bumps, through any view: scores that anything else
    produced or touched in between (a Hugging Face processor, user code) are checked again.
    Inference tensors (made under ``torch.inference_mode()``) have no version counter and are
    never taken as checked here; inside a :class:`Chain` they need not be, since the chain hands
    each member's output to the next itself.

    Example:
        >>> import torch
        >>> scores = torch.zeros(1, 3)
        >>> VALIDATED.remember(scores)
        >>> VALIDATED.holds(scores), VALIDATED.holds(scores.clone())
        (True, False)
        >>> scores[0, 1] = float("nan")  # an in-place write: no longer the validated tensor
        >>> VALIDATED.holds(scores)
        False
    """

    def __init__(self) -> None:
        self.scores: weakref.ref | None = None
        self.version = -1

    def remember(self, scores: torch.Tensor) -> None:
        if scores.is_inference():  # no version counter: an in-place edit could not be seen
            self.scores = None
            return
        self.scores = weakref.ref(scores)
        # torch's version counter (what autograd uses to detect in-place edits); shared by views.
        self.version = scores._version

    def holds(self, scores: torch.Tensor) -> bool:
        return self.scores is not None and self.scores() is scores and scores._version == self.version


#: The scores the last checked processor returned in this thread (see :class:`ValidatedScores`).
VALIDATED = ValidatedScores()


def check_scores(owner: str, scores: torch.Tensor, *, empty_rows_allowed: bool = False) -> None:
    """The input policy on ``scores`` (see the module docstring): one row reduction, read now on
    the CPU, later on CUDA; a ``ValueError`` naming ``owner`` for rows with NaN, ``+inf`` or
    (unless ``empty_rows_allowed``) nothing but ``-inf``.

    Example:
        >>> import torch
        >>> check_scores("TopK", torch.tensor([[0.0, float("nan")]]))
        Traceback (most recent call last):
        ...
        ValueError: TopK: row 0 holds NaN (at column 1) (batch of 1). Scores must be ...
    """
    row_max = scores.amax(dim=-1)  # NaN and +inf propagate; -inf only for a row with no finite entry
    if PENDING.defers(scores.device):
        PENDING.submit(owner, row_max, empty_rows_allowed)
        return
    rows = unusable_rows(row_max.tolist(), empty_rows_allowed=empty_rows_allowed)
    if rows:
        raise score_value_error(owner, scores, rows)


class PendingChecks(threading.local):
    """Value checks whose row maxima are still on their way from a CUDA device (one list per thread).

    :meth:`submit` starts a non-blocking copy into pinned host memory and records an event;
    every later submit first looks at the earlier ones whose copies have arrived (``event.query()``
    never blocks) and raises for any that failed. So a bad step is reported, at the latest, at
    the next processor call in that thread; :meth:`raise_pending` waits for all of them.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[str, torch.Tensor, object, bool]] = []

    @staticmethod
    def defers(device: torch.device) -> bool:
        return device.type == "cuda"

    def submit(self, owner: str, row_max: torch.Tensor, empty_rows_allowed: bool) -> None:
        self.poll()
        host, arrived = self.transfer(row_max)
        self.pending.append((owner, host, arrived, empty_rows_allowed))

    @staticmethod
    def transfer(row_max: torch.Tensor) -> tuple[torch.Tensor, object]:
        """A host copy of ``row_max`` started without blocking, and the event that marks its arrival."""
        host = torch.empty(row_max.shape, dtype=row_max.dtype, pin_memory=True)
        host.copy_(row_max, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(row_max.device))
        return host, event

    def poll(self, wait: bool = False) -> None:
        """Read the checks whose copies have arrived (all of them, waiting, with ``wait``)."""
        waiting = []
        for owner, host, arrived, empty_rows_allowed in self.pending:
            if wait:
                arrived.synchronize()
            elif not arrived.query():
                waiting.append((owner, host, arrived, empty_rows_allowed))
                continue
            values = host.tolist()
            rows = unusable_rows(values, empty_rows_allowed=empty_rows_allowed)
            if rows:
                self.pending = []
                kinds = ", ".join(f"row {r}: {_kind(values[r])}" for r in rows[:5])
                raise ValueError(
                    f"{owner} (an earlier step, checked without a host sync): {kinds}. Scores must be finite "
                    'or -inf (masked), with a finite entry per row; on_nan="pass" skips this check'
                )
        self.pending = waiting

    def raise_pending(self) -> None:
        self.poll(wait=True)


def _kind(row_max: float) -> str:
    return "NaN" if row_max != row_max else "+inf" if row_max > 0 else "every token at -inf"


#: The value checks in flight (CUDA only; on the CPU every check is read at once).
PENDING = PendingChecks()


def host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor on ``device`` back to the host costs no device sync (the CPU):
    where it does, per-step checks are deferred or skipped."""
    return not PENDING.defers(device)


def raise_pending_checks() -> None:
    """Wait for the value checks still in flight on CUDA devices (this thread's) and raise for any
    that failed; the end of a ``generate()`` call is a good place. A no-op on the CPU."""
    PENDING.raise_pending()


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

    def __init__(
        self,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        on_nan: NanPolicy = "raise",
    ):
        self.on_empty = on_empty
        self._eos_ids = check_empty_policy(on_empty, eos_token_id)
        self.on_nan = check_nan_policy(on_nan)
        self._cache = DeviceCache()

    keeps_scores_valid = True  # it only sets entries to -inf, and never leaves a row empty (the policy)

    @property
    def accepts_empty_rows(self) -> bool:
        return self.on_empty == "keep_eos"  # a row that arrives empty gets its EOS back too

    @property
    def eos_token_ids(self) -> list[int]:
        """The EOS ids that ``on_empty="keep_eos"`` keeps (``[]`` under ``"raise"``)."""
        return list(self._eos_ids)

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
        empty = numerics.empty_rows(scores)  # not NaN rows: with on_nan="pass" they pass untouched
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
