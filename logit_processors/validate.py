"""Argument validators: the one place where the library checks what it is given.

Every check raises a ``ValueError`` that names the argument, the bad value and what is allowed,
and returns the value in its normal form (a float, a sorted list of ids, ...), so callers write
``self.top_p = probability("top_p", top_p)`` and never re-check inline.

Host-side checks only: shapes and dtypes are metadata, reading them never syncs a device.

Example:
    >>> positive_int("top_k", 5)
    5
    >>> probability("top_p", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: top_p must be a number in [0, 1]; got 1.5
    >>> token_ids("deny", [7, 3, 7])
    [3, 7]
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

EmptyRowPolicy = Literal["raise", "keep_eos"]
EMPTY_ROW_POLICIES: tuple[str, ...] = ("raise", "keep_eos")
NanPolicy = Literal["raise", "pass"]
NAN_POLICIES: tuple[str, ...] = ("raise", "pass")


def check_call(input_ids: torch.Tensor, scores: torch.Tensor, owner: str = "processor") -> None:
    """Validate a processor call's arguments (types, shapes, dtypes, devices; never reads tensor data)."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(
            f"{owner}: scores must be a float tensor of shape [batch, vocab]; got {describe(scores)}"
        )
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"{owner}: input_ids must be a tensor of shape [batch, length]; got {describe(input_ids)}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"{owner}: input_ids must be an integer tensor of token ids; got {describe(input_ids)}")
    if input_ids.shape[0] != scores.shape[0]:
        raise ValueError(
            f"{owner}: input_ids has {input_ids.shape[0]} rows but scores has {scores.shape[0]}; they must match"
        )
    if scores.shape[-1] == 0:
        raise ValueError(f"{owner}: scores have no columns (a vocabulary of 0 tokens); got {describe(scores)}")
    for name, tensor in (("scores", scores), ("input_ids", input_ids)):
        if tensor.is_meta:
            raise ValueError(f"{owner}: {name} are on the meta device, which holds no data; move them to a real device")


def check_nan_policy(on_nan: object) -> str:
    """``on_nan`` if it is one of :data:`NAN_POLICIES`, else a ValueError saying which are."""
    if on_nan not in NAN_POLICIES:
        raise ValueError(f"on_nan must be one of {NAN_POLICIES}; got {on_nan!r}")
    return on_nan


def unusable_rows(row_max: Sequence[float], *, empty_rows_allowed: bool = False) -> list[int]:
    """Rows whose maximum is NaN, ``+inf``, or (unless allowed) ``-inf``: from one row reduction
    (``amax`` propagates NaN), the rows that break the input policy (see :mod:`logit_processors.core`)."""
    # The common case in one Python sum: it is finite only if every value is (a sum that overflows
    # merely sends us to the exact row-by-row look below).
    if math.isfinite(sum(row_max)):
        return []
    return [
        row for row, value in enumerate(row_max)
        if math.isnan(value) or value == math.inf or (value == -math.inf and not empty_rows_allowed)
    ]


def score_value_error(owner: str, scores: torch.Tensor, rows: Sequence[int]) -> ValueError:
    """The error for rows of ``scores`` that break the input policy: which rows, what they hold, where."""
    parts = []
    for row in list(rows)[:5]:
        values = scores[row].detach()
        nan, pos_inf = torch.isnan(values), values == math.inf
        if bool(nan.any()):
            parts.append(f"row {row} holds NaN (at column {int(nan.nonzero()[0])})")
        elif bool(pos_inf.any()):
            parts.append(f"row {row} holds +inf (at column {int(pos_inf.nonzero()[0])})")
        else:
            parts.append(f"row {row} arrived with every token at -inf (nothing left to sample)")
    more = f" and {len(rows) - 5} more rows" if len(rows) > 5 else ""
    return ValueError(
        f"{owner}: {'; '.join(parts)}{more} (batch of {scores.shape[0]}). Scores must be finite or -inf "
        "(masked), with at least one finite entry per row; look at what produced them (the model, or an "
        'earlier processor). on_nan="pass" skips this check'
    )


def describe(x: object) -> str:
    """A short description of a bad argument for an error message: shape and dtype of a tensor, else type and repr."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_tokenizer(name: str, tokenizer: object, *, methods: Sequence[str] = ("encode",)) -> object:
    """``tokenizer`` if it has the given methods (a Hugging Face tokenizer does), else a TypeError
    naming ``name``; a string gets a hint, since a hub id or path is the usual mistake."""
    if isinstance(tokenizer, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{name} must be a Hugging Face tokenizer object, not the name or path {tokenizer!r}: load it first "
            "(transformers.AutoTokenizer.from_pretrained(...) or logit_processors.models.load(...))"
        )
    missing = [m for m in methods if not callable(getattr(tokenizer, m, None))]
    if missing:
        raise TypeError(f"{name} must be a Hugging Face tokenizer (with {', '.join(methods)}); got {describe(tokenizer)}")
    return tokenizer


def optional_token_id(name: str, value: object) -> int | None:
    """``value`` as a token id (an int >= 0) or None, else a ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a token id (an int >= 0) or None; got {value!r}")
    return int(value)


def positive_finite_float(name: str, value: object) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return value


def finite_float(name: str, value: object, *, minimum: float | None = None, why: str = "") -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is a finite real number
    (and ``>= minimum`` when given). ``why`` is added to the message, e.g. ``"the amateur's weight"``."""
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
    if bad or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be a finite number{bound}{reason}; got {value!r}")
    return float(value)


def finite_floats(name: str, values: Sequence[object]) -> list[float]:
    """Every entry of ``values`` as a float, or a ValueError naming ``name`` and showing all of them."""
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite numbers; got {list(values)!r}")
    return [float(v) for v in values]


def eos_token_ids(eos_token_id: int | Sequence[int] | None) -> list[int]:
    """``eos_token_id`` (an int, a list of ints or None) as a sorted list of ids (``[]`` for None)."""
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, numbers.Number) and not isinstance(eos_token_id, numbers.Integral):
        raise ValueError(f"eos_token_id must be a token id (an int) or a list of them; got {eos_token_id!r}")
    ids = [eos_token_id] if isinstance(eos_token_id, numbers.Integral) else eos_token_id
    return token_ids("eos_token_id", ids)


def probability(name: str, value: object, *, allow_zero: bool = True, allow_one: bool = True) -> float:
    """``value`` as a float in [0, 1] (ends as allowed), or a ValueError naming ``name``."""
    low = "[" if allow_zero else "("
    high = "]" if allow_one else ")"
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if not bad:
        value = float(value)
        bad = (
            math.isnan(value)
            or value < 0
            or value > 1
            or (value == 0 and not allow_zero)
            or (value == 1 and not allow_one)
        )
    if bad:
        raise ValueError(f"{name} must be a number in {low}0, 1{high}; got {value!r}")
    return float(value)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def token_ids(name: str, ids: Iterable[int], vocab_size: int | None = None) -> list[int]:
    """Sorted unique token ids; ValueError naming ``name`` and the bad ids if any is invalid."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(f"{name} must be an iterable of token ids (ints); got {ids!r}")
    ids = list(ids)
    non_ints = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if non_ints:
        raise ValueError(f"{name} must contain integer token ids; got non-integers {non_ints[:10]!r}")
    negative = sorted({int(i) for i in ids if i < 0})
    if negative:
        raise ValueError(f"{name} contains negative token ids {negative[:10]}; ids must be >= 0")
    if vocab_size is not None:
        check_ids_in_range(name, ids, vocab_size)
    return sorted({int(i) for i in ids})


def check_ids_in_range(name: str, ids: Sequence[int], vocab_size: int) -> None:
    too_big = sorted({int(i) for i in ids if i >= vocab_size})
    if too_big:
        raise ValueError(
            f"{name} contains token ids {too_big[:10]} outside the vocabulary; "
            f"allowed ids are 0..{vocab_size - 1} (scores have {vocab_size} columns)"
        )


def check_empty_policy(on_empty: str, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """Validate an ``on_empty`` policy; returns the EOS ids that ``keep_eos`` will keep."""
    if on_empty not in EMPTY_ROW_POLICIES:
        raise ValueError(f"on_empty must be one of {EMPTY_ROW_POLICIES}; got {on_empty!r}")
    if on_empty != "keep_eos":
        return []
    if eos_token_id is None:
        raise ValueError('on_empty="keep_eos" needs eos_token_id (an int or a list of ints); got None')
    return eos_token_ids(eos_token_id)


def per_row(name: str, values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Match a per-row tensor of length n to a batch of B rows.

    n == B: used as is. B a multiple of n: ``generate()`` expanded each prompt to B / n
    consecutive rows (``num_return_sequences``, beams), so each value is repeated in that order.
    Anything else is a ValueError naming ``name``.
    """
    n = values.shape[0]
    if n == batch_size:
        return values
    if n > 0 and batch_size % n == 0:
        return values.repeat_interleave(batch_size // n, dim=0)
    raise ValueError(
        f"{name} has {n} rows but the batch has {batch_size}; it must have one row per batch row, "
        f"or one per prompt when generate() expands each prompt to several rows (B a multiple of {n})"
    )
