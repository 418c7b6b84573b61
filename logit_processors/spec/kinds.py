"""The step types a spec can hold: for each, its fields with their defaults, how a processor is
read into them and how they build it back. One table (:data:`KINDS`), so that what a request can
make a server build is visible in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..calibration.temperature import CalibratedTemperature
from ..processors import EntropyTemperature, MinP, PhraseBan, Temperature, TextPredicate, TokenMask, TopK, TopP, VocabFilter
from ..processors.masking import TEXT_TESTS
from ..validate import token_ids
from .limits import SpecError, SpecLimits, check_count

REQUIRED = object()  # a field without a default

#: Fields every processor takes, with their defaults.
COMMON = {"on_nan": "raise"}
#: Fields every masking processor takes.
MASKING = {"on_empty": "raise", "eos_token_id": None, **COMMON}


@dataclass(frozen=True)
class Kind:
    """One step type: ``name`` (the spec's ``"type"``), the processor class, its fields (name ->
    default, or ``REQUIRED``), ``read(processor) -> fields``, ``build(fields, tokenizer, limits)
    -> processor``, and whether it holds text (then building needs a tokenizer)."""

    name: str
    cls: type
    fields: dict[str, Any]
    read: Callable[[Any], dict[str, Any]]
    build: Callable[[dict[str, Any], Any, SpecLimits, str], Any]
    text: Callable[[dict[str, Any]], bool] = lambda fields: False


def masking_fields(p) -> dict[str, Any]:
    return {"on_empty": p.on_empty, "eos_token_id": p.eos_token_ids or None, "on_nan": p.on_nan}


def masking_args(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: fields[name] for name in MASKING if name in fields}


# -- temperatures -------------------------------------------------------------------------------


def read_temperature(p: Temperature) -> dict[str, Any]:
    t = p.temperature
    return {"temperature": t if isinstance(t, float) else t.tolist(), "on_nan": p.on_nan}


def build_temperature(fields, tokenizer, limits, where) -> Temperature:
    t = fields["temperature"]
    if isinstance(t, list):
        check_count(f"{where}.temperature", len(t), limits.rows, "rows", "per-row temperatures")
        t = torch.tensor(t, dtype=torch.float64) if all(_is_number(v) for v in t) else t
    return Temperature(t, on_nan=fields.get("on_nan", "raise"))


def read_calibrated(p: CalibratedTemperature) -> dict[str, Any]:
    return {"temperature": p.temperature, "columns": p.columns, "model": p.model_identity, "fit": p.fit_stats,
            "on_nan": p.on_nan}


def build_calibrated(fields, tokenizer, limits, where) -> CalibratedTemperature:
    for name in ("model", "fit"):
        check_metadata(f"{where}.{name}", fields.get(name), limits)
    return CalibratedTemperature(fields["temperature"], columns=fields.get("columns"), identity=fields.get("model"),
                                 fit=fields.get("fit"), on_nan=fields.get("on_nan", "raise"))


def check_metadata(field: str, value: object, limits: SpecLimits) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a JSON object or null; got {type(value).__name__}")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as error:
        raise SpecError(field, f"must be plain JSON ({error})") from error
    check_count(field, size, limits.metadata_bytes, "metadata_bytes", "bytes of JSON")


# -- token masks --------------------------------------------------------------------------------


def read_token_mask(p: TokenMask) -> dict[str, Any]:
    fields = {"allow": None, "deny": None, "vocab_size": p.vocab_size, **masking_fields(p)}
    for name in ("allow", "deny"):
        value = getattr(p, name)
        if isinstance(value, torch.Tensor):  # a bool mask: its ids (one list per row), and its width
            rows = value.reshape(-1, value.shape[-1])
            ids = [row.nonzero().flatten().tolist() for row in rows]
            value = ids[0] if value.dim() == 1 else ids
            if fields["vocab_size"] is None:
                fields["vocab_size"] = int(rows.shape[-1])
        fields[name] = value
    return fields


def build_token_mask(fields, tokenizer, limits, where) -> TokenMask:
    vocab_size = fields.get("vocab_size")
    check_id_bound(f"{where}.vocab_size", vocab_size, limits)
    lists = {}
    total = 0
    for name in ("allow", "deny"):
        value = fields.get(name)
        if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
            check_count(f"{where}.{name}", len(value), limits.rows, "rows", "per-row lists")
            total += sum(len(row) for row in value)
            lists[name] = ("rows", value)
        elif isinstance(value, list):
            total += len(value)
            lists[name] = ("ids", value)
        else:
            lists[name] = (None, value)
    check_count(where, total, limits.token_ids, "token_ids", "token ids")
    args = {}
    for name, (shape, value) in lists.items():
        if shape is not None:
            for row in value if shape == "rows" else [value]:
                for token in row:
                    check_id_bound(f"{where}.{name}", token, limits)
        if shape == "rows":  # per-row lists: a bool mask [rows, vocab_size]
            if vocab_size is None:
                raise SpecError(f"{where}.{name}", "per-row lists need vocab_size (the width of the mask)")
            mask = torch.zeros(len(value), vocab_size, dtype=torch.bool)
            for r, row in enumerate(value):
                _mark(mask[r], row, f"{where}.{name}[{r}]", vocab_size)
            value = mask
        args[name] = value
    return TokenMask(args["allow"], args["deny"], vocab_size=vocab_size, **masking_args(fields))


def _mark(row: torch.Tensor, ids: list, field: str, width: int) -> None:
    try:
        row[token_ids(field, ids, width)] = True
    except ValueError as error:
        raise SpecError(field, str(error)) from error


def check_id_bound(field: str, value: object, limits: SpecLimits) -> None:
    """Token ids and vocabulary sizes index a mask that is built over the vocabulary: cap them."""
    if isinstance(value, int) and not isinstance(value, bool) and value > limits.vocab_size:
        raise SpecError(field, f"{value:,} is larger than any vocabulary (SpecLimits.vocab_size = {limits.vocab_size:,})")


# -- text-level masks ---------------------------------------------------------------------------


def read_vocab_filter(p: VocabFilter) -> dict[str, Any]:
    return {"predicate": predicate_spec(p.predicate), "keep_special_tokens": p.keep_special_tokens, **masking_fields(p)}


def predicate_spec(predicate: object) -> dict[str, Any]:
    """A vocabulary predicate as data: a :class:`TextPredicate`, or a ``str`` method it can name."""
    if isinstance(predicate, TextPredicate):
        fields = {"test": predicate.test} if predicate.test is not None else {"chars": predicate.chars}
        return {**fields, "strip": True} if predicate.strip else fields
    for name, method in TEXT_TESTS.items():
        if predicate is method:
            return {"test": name}
    raise SpecError(
        "predicate",
        f"{predicate!r} cannot be written down; use logit_processors.processors.TextPredicate (a str test such as "
        f"'isascii', or a set of characters) or one of the str methods {sorted(TEXT_TESTS)}",
    )


def build_vocab_filter(fields, tokenizer, limits, where) -> VocabFilter:
    predicate = fields["predicate"]
    field = f"{where}.predicate"
    if not isinstance(predicate, dict):
        raise SpecError(field, f'must be an object such as {{"test": "isascii"}} or {{"chars": "0123456789"}}; got {predicate!r}')
    unknown = sorted(set(predicate) - {"test", "chars", "strip"})
    if unknown:
        raise SpecError(field, f"unknown field(s) {unknown}; allowed: test, chars, strip")
    if isinstance(predicate.get("chars"), str):
        check_count(f"{field}.chars", len(predicate["chars"]), limits.text_chars, "text_chars", "characters")
    try:
        test = TextPredicate(predicate.get("test"), chars=predicate.get("chars"), strip=predicate.get("strip", False))
    except ValueError as error:
        raise SpecError(field, str(error)) from error
    return VocabFilter(tokenizer, test, keep_special_tokens=fields.get("keep_special_tokens", True), **masking_args(fields))


def read_phrase_ban(p: PhraseBan) -> dict[str, Any]:
    if p.phrases is None:
        words = {"token_ids": [list(seq) for seq in p.sequences]}
    else:
        words = {"phrases": list(p.phrases), "variants": p.variants, "case_variants": p.case_variants}
    return {**words, **masking_fields(p)}


def build_phrase_ban(fields, tokenizer, limits, where) -> PhraseBan:
    has_phrases, has_ids = "phrases" in fields, "token_ids" in fields
    if has_phrases == has_ids:
        raise SpecError(where, "give exactly one of phrases (text) or token_ids (lists of ids)")
    masking = masking_args(fields)
    if has_ids:
        sequences = fields["token_ids"]
        if isinstance(sequences, list):
            check_count(f"{where}.token_ids", len(sequences), limits.sequences, "sequences", "sequences")
            lengths = [len(s) for s in sequences if isinstance(s, list)]
            check_count(f"{where}.token_ids", max(lengths, default=0), limits.sequence_length, "sequence_length",
                        "ids in one sequence")
            check_count(f"{where}.token_ids", sum(lengths), limits.token_ids, "token_ids", "token ids")
            for s in sequences:
                for token in s if isinstance(s, list) else ():
                    check_id_bound(f"{where}.token_ids", token, limits)
        if "variants" in fields or "case_variants" in fields:
            raise SpecError(where, "variants and case_variants apply to phrases, not to token_ids")
        return PhraseBan.from_token_ids(sequences, **masking)
    phrases = fields["phrases"]
    if isinstance(phrases, list):
        check_count(f"{where}.phrases", len(phrases), limits.phrases, "phrases", "phrases")
        for i, phrase in enumerate(phrases):
            if isinstance(phrase, str):
                check_count(f"{where}.phrases[{i}]", len(phrase), limits.phrase_chars, "phrase_chars", "characters")
    return PhraseBan(phrases, tokenizer, variants=fields.get("variants", True),
                     case_variants=fields.get("case_variants", False), **masking)


# -- truncation ---------------------------------------------------------------------------------


def truncation_kind(name: str, cls: type, parameter: str) -> Kind:
    def read(p) -> dict[str, Any]:
        return {parameter: getattr(p, parameter), "min_tokens_to_keep": p.min_tokens_to_keep, **masking_fields(p)}

    def build(fields, tokenizer, limits, where):
        return cls(fields[parameter], fields.get("min_tokens_to_keep", 1), **masking_args(fields))

    return Kind(name, cls, {parameter: REQUIRED, "min_tokens_to_keep": 1, **MASKING}, read, build)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Every step type, by its ``"type"`` name.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("temperature", Temperature, {"temperature": REQUIRED, **COMMON}, read_temperature, build_temperature),
    Kind("entropy_temperature", EntropyTemperature, {"min_t": REQUIRED, "max_t": REQUIRED, "exponent": 1.0, **COMMON},
         lambda p: {"min_t": p.min_t, "max_t": p.max_t, "exponent": p.exponent, "on_nan": p.on_nan},
         lambda f, tokenizer, limits, where: EntropyTemperature(f["min_t"], f["max_t"], f.get("exponent", 1.0),
                                                                on_nan=f.get("on_nan", "raise"))),
    Kind("calibrated_temperature", CalibratedTemperature,
         {"temperature": REQUIRED, "columns": None, "model": None, "fit": {}, **COMMON}, read_calibrated, build_calibrated),
    truncation_kind("top_k", TopK, "k"),
    truncation_kind("top_p", TopP, "p"),
    truncation_kind("min_p", MinP, "p"),
    Kind("token_mask", TokenMask, {"allow": None, "deny": None, "vocab_size": None, **MASKING},
         read_token_mask, build_token_mask),
    Kind("vocab_filter", VocabFilter, {"predicate": REQUIRED, "keep_special_tokens": True, **MASKING},
         read_vocab_filter, build_vocab_filter, text=lambda fields: True),
    Kind("phrase_ban", PhraseBan,
         {"phrases": None, "token_ids": None, "variants": True, "case_variants": False, **MASKING},
         read_phrase_ban, build_phrase_ban, text=lambda fields: "phrases" in fields),
)}
