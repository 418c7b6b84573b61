"""``to_spec``, ``from_spec`` and ``check_spec``: processors to data and back (see the room's docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from transformers import LogitsProcessorList

from ..core import Chain
from .kinds import KINDS, REQUIRED, Kind
from .limits import DEFAULT_LIMITS, SpecError, SpecLimits, check_count

KIND_OF_CLASS: dict[type, Kind] = {kind.cls: kind for kind in KINDS.values()}

#: A step: where it sits in the spec (for error messages), its kind and its fields.
Step = tuple[str, Kind, dict[str, Any]]


def to_spec(processor: Any) -> dict[str, Any]:
    """The spec of a stateless processor (a step ``{"type": ..., ...}``) or of a chain or list of
    them (``{"processors": [...]}``); only arguments that differ from the defaults are written.

    A processor that cannot be written down (one that runs other models, a monitor, a predicate
    given as a lambda, a subclass of ours) raises :class:`SpecError` naming its place.

    Example:
        >>> from logit_processors import PhraseBan, TopP, to_spec
        >>> to_spec(TopP(0.9, min_tokens_to_keep=2))
        {'type': 'top_p', 'p': 0.9, 'min_tokens_to_keep': 2}
    """
    if isinstance(processor, (list, tuple, LogitsProcessorList)):
        flat = list(_flatten(processor))
        return {"processors": [_step_spec(p, f"processors[{i}]") for i, p in enumerate(flat)]}
    return _step_spec(processor, "spec")


def _flatten(processors) -> Any:
    for p in processors:
        if isinstance(p, (list, tuple, LogitsProcessorList)):
            yield from _flatten(p)
        else:
            yield p


def _step_spec(processor: Any, where: str) -> dict[str, Any]:
    kind = KIND_OF_CLASS.get(type(processor))
    if kind is None:
        raise SpecError(
            where,
            f"{type(processor).__name__} cannot be written as a spec (only stateless processors can: "
            f"{', '.join(sorted(k.cls.__name__ for k in KINDS.values()))})",
        )
    try:
        fields = kind.read(processor)
    except SpecError as error:
        raise SpecError(f"{where} ({kind.name}).{error.field}", str(error).split(": ", 1)[1]) from error
    step = {"type": kind.name}
    for name, value in fields.items():
        default = kind.fields[name]
        if default is REQUIRED or value != default:
            step[name] = value
    return step


def from_spec(spec: dict | list | str | bytes, tokenizer=None, *, limits: SpecLimits | None = DEFAULT_LIMITS) -> Any:
    """Build the processor a spec describes: a step gives that processor, ``{"processors": [...]}``
    (or a list of steps) a :class:`~logit_processors.Chain`.

    Args:
        spec: a dict, a list of steps, or JSON text of either.
        tokenizer: the tokenizer of the model that will run the processors; needed for steps
            that hold text (``phrase_ban`` with ``phrases``, ``vocab_filter``), which are bound to it.
        limits: size caps (:class:`SpecLimits`); ``None`` lifts them (for trusted specs only).

    Raises :class:`SpecError` (a ``ValueError``) naming the field: not JSON, an unknown type or
    field, a bad value (the processor's own message), a text step without a tokenizer, a spec
    over the limits.

    Example:
        >>> from logit_processors import from_spec
        >>> from_spec({"processors": [{"type": "token_mask", "deny": [0, 3]}, {"type": "min_p", "p": 0.05}]})
        Chain(TokenMask(allow=None, deny=[0, 3], on_empty='raise'), MinP(p=0.05, min_tokens_to_keep=1, on_empty='raise'))
        >>> from_spec({"type": "top_k", "k": 0})
        Traceback (most recent call last):
        ...
        logit_processors.spec.limits.SpecError: spec (top_k): k must be a positive integer; got 0
    """
    limits = limits or SpecLimits.unlimited()
    steps, chained = spec_steps(spec, limits)
    built = []
    for where, kind, fields in steps:
        if kind.text(fields) and tokenizer is None:
            raise SpecError(where, f"{kind.name} holds text, which is bound to the tokenizer of whoever runs the "
                                   "spec: pass it, from_spec(spec, tokenizer=...)")
        built.append(_build(where, kind, fields, tokenizer, limits))
    return Chain(*built) if chained else built[0]


def _build(where: str, kind: Kind, fields: dict[str, Any], tokenizer, limits: SpecLimits) -> Any:
    try:
        return kind.build(fields, tokenizer, limits, where)
    except SpecError:
        raise
    except (ValueError, TypeError) as error:  # the processor's own message names the argument
        raise SpecError(where, str(error)) from error


def check_spec(spec: dict | list | str | bytes, *, limits: SpecLimits | None = DEFAULT_LIMITS) -> dict[str, Any]:
    """Validate a spec without a tokenizer or a model (e.g. at a server's door) and return it as a
    dict ``{"processors": [...]}``; :class:`SpecError` as :func:`from_spec` would raise.

    Every step is built, text steps with a stand-in tokenizer (one token per character), so the
    checks are the processors' own. What needs the real model is left to the one who builds the
    spec: token ids beyond its vocabulary, a calibration's column count.

    Example:
        >>> check_spec('[{"type": "phrase_ban", "phrases": ["Paris"]}]')
        {'processors': [{'type': 'phrase_ban', 'phrases': ['Paris']}]}
        >>> check_spec({"type": "phrase_ban", "phrases": ["x"] * 100_000})
        Traceback (most recent call last):
        ...
        logit_processors.spec.limits.SpecError: spec (phrase_ban).phrases: 100,000 phrases; at most 1,000 are allowed (SpecLimits.phrases)
    """
    limits = limits or SpecLimits.unlimited()
    steps, _ = spec_steps(spec, limits)
    for where, kind, fields in steps:
        _build(where, kind, fields, CharacterTokenizer() if kind.text(fields) else None, limits)
    return {"processors": [{"type": kind.name, **fields} for _, kind, fields in steps]}


def spec_steps(spec: dict | list | str | bytes, limits: SpecLimits = DEFAULT_LIMITS) -> tuple[list[Step], bool]:
    """The steps of a spec, checked for shape (known types and fields, required fields present, the
    number of steps), and whether it describes a chain. Values are checked by building."""
    if isinstance(spec, (str, bytes, bytearray)):
        spec = parse_json(spec, limits)
    if isinstance(spec, list):
        spec = {"processors": spec}
    if not isinstance(spec, dict):
        raise SpecError("spec", f'must be a JSON object ({{"processors": [...]}} or one step) or a list of steps; '
                                f"got {type(spec).__name__}")
    if "type" in spec:
        return [_step("spec", spec)], False
    unknown = sorted(set(spec) - {"processors"})
    if unknown or "processors" not in spec:
        raise SpecError("spec", f'must hold "processors" (a list of steps) or be one step with a "type"; '
                                f"got the field(s) {sorted(spec)}")
    steps = spec["processors"]
    if not isinstance(steps, list):
        raise SpecError("processors", f"must be a list of steps; got {type(steps).__name__}")
    check_count("processors", len(steps), limits.processors, "processors", "steps")
    return [_step(f"processors[{i}]", step) for i, step in enumerate(steps)], True


def _step(where: str, step: object) -> Step:
    if not isinstance(step, dict):
        raise SpecError(where, f'must be an object with a "type"; got {type(step).__name__} {_short(step)}')
    name = step.get("type")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise SpecError(f"{where}.type", f"unknown processor type {_short(name)}; known: {', '.join(KINDS)}")
    where = f"{where} ({name})"
    fields = {k: v for k, v in step.items() if k != "type"}
    unknown = sorted(set(fields) - set(kind.fields))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", f"unknown field; {name} takes {', '.join(kind.fields)}")
    missing = [f for f, default in kind.fields.items() if default is REQUIRED and f not in fields]
    if missing:
        raise SpecError(f"{where}.{missing[0]}", "is required")
    return where, kind, fields


def parse_json(text: str | bytes | bytearray, limits: SpecLimits) -> object:
    """JSON text to Python, refusing text over ``limits.json_bytes`` and the non-standard NaN/Infinity."""
    check_count("spec", len(text), limits.json_bytes, "json_bytes", "bytes of JSON")

    def refuse(constant: str) -> None:
        raise SpecError("spec", f"{constant} is not a JSON number; give finite numbers")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as error:
        raise SpecError("spec", f"not valid JSON ({error})") from error
    except RecursionError as error:
        raise SpecError("spec", "nested too deeply") from error


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CharacterTokenizer:
    """Stands in for a tokenizer when a spec is checked without one: one token per character (ids
    below 256), a one-token vocabulary to filter, EOS 0. Text arguments then go through the same
    constructors, and checks, as they will with the real tokenizer."""

    eos_token_id = 0
    all_special_ids: Sequence[int] = ()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % 256 for c in text]

    def batch_decode(self, ids, **kwargs) -> list[str]:
        return ["a" for _ in ids]

    def __len__(self) -> int:
        return 1
