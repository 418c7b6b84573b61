"""Size caps on a spec, and the error every bad spec raises.

A spec may come from an HTTP request: each cap bounds what one request can make a server build
(a ban list's automaton, a mask over a vocabulary, the JSON text itself) and the error names the
field and the cap, so that the caller learns what to change.
"""

from __future__ import annotations

from dataclasses import dataclass


class SpecError(ValueError):
    """A bad or oversized spec; ``field`` is where (``processors[2] (phrase_ban).phrases``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SpecLimits:
    """The largest spec :func:`~logit_processors.spec.from_spec` accepts, field by field.

    The defaults admit every realistic request while keeping the work one spec can cause to a
    few tens of milliseconds (phrases are tokenized when the spec is built; 1,000 phrases in their
    default variants are 3,000 short encodings). ``SpecLimits.unlimited()`` lifts them, for
    trusted specs.
    """

    #: Steps in one chain.
    processors: int = 64
    #: Phrases in one ``phrase_ban`` step, and characters in one phrase.
    phrases: int = 1_000
    phrase_chars: int = 256
    #: Banned id sequences in one ``phrase_ban`` step (``token_ids``), and ids in one sequence.
    sequences: int = 10_000
    sequence_length: int = 64
    #: Token ids in one step (allow + deny lists, or all banned sequences together).
    token_ids: int = 262_144
    #: The largest token id or ``vocab_size`` (a mask is built over the vocabulary).
    vocab_size: int = 1 << 21
    #: Per-row values (temperatures, masks): rows.
    rows: int = 1_024
    #: Characters of a vocabulary predicate's ``chars``.
    text_chars: int = 4_096
    #: Bytes of free-form metadata (a calibration's model identity and fit statistics).
    metadata_bytes: int = 65_536
    #: Bytes of a spec given as JSON text.
    json_bytes: int = 8 << 20

    @classmethod
    def unlimited(cls) -> SpecLimits:
        big = 1 << 62
        return cls(**{name: big for name in cls.__dataclass_fields__})


DEFAULT_LIMITS = SpecLimits()


def check_count(field: str, count: int, limit: int, cap_name: str, what: str) -> None:
    """SpecError naming ``field`` and the cap when ``count`` exceeds ``limit``."""
    if count > limit:
        raise SpecError(field, f"{count:,} {what}; at most {limit:,} are allowed (SpecLimits.{cap_name})")
