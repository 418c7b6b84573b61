"""What every view of a trace shares: how a statistic becomes a color, how a token is shown,
and which tokens are prompt and which are output.

Example:
    >>> heat("surprisal", 4.0), heat("top_gap", 0.0)     # half of the scale; a coin flip is full heat
    (0.5, 1.0)
    >>> visible_token(" the\\n")
    '␣the↵'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..gaps.trace import Trace

#: The statistics a view can be colored by.
COLOR_BY: tuple[str, ...] = ("surprisal", "top_gap", "chosen_gap", "entropy")

#: Nats at which a statistic reaches full heat. For ``top_gap`` the scale runs the other way:
#: a gap of 0 (a coin flip between the two leading tokens) is full heat, a gap of 6 nats
#: (odds of 400:1) or more is none. 8 nats of surprisal is a chosen probability of ~3e-4;
#: 5 nats of entropy is as uncertain as a uniform choice among ~150 tokens.
HEAT_SCALES: dict[str, float] = {"surprisal": 8.0, "top_gap": 6.0, "chosen_gap": 8.0, "entropy": 5.0}

LABELS = {"surprisal": "surprisal", "top_gap": "top gap", "chosen_gap": "chosen gap", "entropy": "entropy"}
MEANINGS = {
    "surprisal": "-log p(token), nats: red = the model did not expect this token",
    "top_gap": "log p(top1) - log p(top2), nats: red = a thin margin, the model was torn",
    "chosen_gap": "log p(top1) - log p(token), nats: red = far below the model's favourite",
    "entropy": "entropy of the next-token distribution, nats: red = many plausible tokens",
}

# Characters that would be invisible (or break the layout) if shown as they are.
GLYPHS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


# --------------------------------------------------------------------------------------------
# Shared helpers


def visible_token(token: str | None, token_id: int | None = None) -> str:
    """A token string with every character visible, for tables and tooltips.

    Spaces become ``␣``, newlines ``↵``, tabs ``⇥``, carriage returns ``␍``; other control
    characters are written as ``\\xNN``. A token without a string (no tokenizer, or a column
    of a padded LM head) is shown as ``[id]``; the empty string as ``∅``.

    Example:
        >>> visible_token(" the"), visible_token("\\n\\n"), visible_token(None, 50257), visible_token("")
        ('␣the', '↵↵', '[50257]', '∅')
    """
    if token is None:
        return f"[{token_id}]" if token_id is not None else "[?]"
    if token == "":
        return "∅"
    return "".join(GLYPHS.get(c, _escape_control(c)) for c in token)


def _escape_control(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c


def heat(color_by: str, value: float | None) -> float | None:
    """Where ``value`` of statistic ``color_by`` lies on the 0 (calm) .. 1 (alarming) scale.

    ``None`` for a missing value (``nan``: the first token of a teacher-forced text).

    Example:
        >>> heat("surprisal", 4.0), heat("top_gap", 0.0), heat("top_gap", float("inf"))
        (0.5, 1.0, 0.0)
    """
    check_color_by(color_by)
    if value is None or math.isnan(value):
        return None
    fraction = min(max(value / HEAT_SCALES[color_by], 0.0), 1.0)  # inf -> 1
    return 1.0 - fraction if color_by == "top_gap" else fraction


def check_color_by(color_by: object) -> str:
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by={color_by!r} is not a statistic; use one of {', '.join(COLOR_BY)}")
    return color_by


def ramp(h: float, stops: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """Linear interpolation through evenly spaced RGB ``stops`` at ``h`` in [0, 1]."""
    x = h * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    t = x - i
    return tuple(round(a + (b - a) * t) for a, b in zip(stops[i], stops[i + 1], strict=True))


# White -> amber -> red backgrounds (dark text stays readable on all three); green -> amber ->
# red text for terminals, readable on dark and light backgrounds alike.
BACKGROUND_STOPS = ((255, 255, 255), (253, 224, 138), (239, 88, 88))
FOREGROUND_STOPS = ((34, 197, 94), (234, 179, 8), (239, 68, 68))
_MISSING_BACKGROUND = "#eef1f5"


def css_color(h: float | None) -> str:
    if h is None:
        return _MISSING_BACKGROUND
    return "rgb({}, {}, {})".format(*ramp(h, BACKGROUND_STOPS))


def resolve_prompt_lengths(trace: Trace, prompt_lengths: int | Sequence[int | None] | None) -> list[int | None]:
    """Per sequence, how many leading tokens are prompt (``None``: unknown, no split shown)."""
    if prompt_lengths is None:
        # A monitor's trace starts after the prompt (position > 0): every token is generated.
        return [0 if len(seq) and int(seq.positions[0]) > 0 else None for seq in trace]
    if isinstance(prompt_lengths, int):
        prompt_lengths = [prompt_lengths] * len(trace)
    if len(prompt_lengths) != len(trace):
        raise ValueError(
            f"prompt_lengths has {len(prompt_lengths)} entries but the trace has {len(trace)} sequences; "
            "give one per sequence (or one int for all)"
        )
    for i, (n, seq) in enumerate(zip(prompt_lengths, trace, strict=True)):
        if n is not None and not (isinstance(n, int) and 0 <= n <= len(seq)):
            raise ValueError(f"prompt_lengths[{i}]={n!r} must be an int in 0..{len(seq)} (the sequence's length)")
    return list(prompt_lengths)


def part_of(index: int, prompt_length: int | None) -> str | None:
    if prompt_length is None:
        return None
    return "prompt" if index < prompt_length else "output"


def records_by_sequence(trace: Trace) -> list[list[dict[str, Any]]]:
    grouped: list[list[dict[str, Any]]] = [[] for _ in trace]
    for record in trace.records():
        grouped[record["sequence"]].append(record)
    return grouped


def format_number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.{digits}f}"
    # A log-prob rounded a hair above 0 gives a surprisal of -1e-7: show it as 0.
    return text[1:] if text.startswith("-") and float(text) == 0 else text
