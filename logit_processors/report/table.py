"""The terminal view of a trace: a ``rich`` table, one row per token, colored by one statistic.

Example:
    >>> from logit_processors.gaps import gap_stats
    >>> from logit_processors.gaps.trace import Trace, sequence_trace
    >>> import torch
    >>> stats = gap_stats(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    >>> trace = Trace([sequence_trace(torch.tensor([0, 0]), torch.tensor([1, 2]), stats, None)], top_k=2)
    >>> rich_table(trace).row_count
    2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..gaps.trace import Trace
from .style import (
    FOREGROUND_STOPS,
    LABELS,
    MEANINGS,
    check_color_by,
    format_number,
    heat,
    ramp,
    records_by_sequence,
    resolve_prompt_lengths,
    visible_token,
)

if TYPE_CHECKING:  # rich is imported when a table is made
    from rich.table import Table



def rich_table(
    trace: Trace,
    *,
    color_by: str = "surprisal",
    max_rows: int | None = None,
    prompt_lengths: int | Sequence[int | None] | None = None,
    alternatives: int = 3,
) -> Table:
    """A ``rich.table.Table`` with one row per token, the token and ``color_by`` column colored.

    Columns: position, token (whitespace made visible), id, surprisal, top gap, chosen gap,
    entropy, rank, and the ``alternatives`` most likely tokens with their probabilities. A rule
    separates prompt from generated tokens when the split is known (see :mod:`logit_processors.report`).
    With ``max_rows``, long traces keep their first and last rows around a ``…`` row.

    Example:
        >>> import os
        >>> from rich.console import Console
        >>> from logit_processors.gaps import token_stats
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> trace = token_stats(model, tokenizer, "The with statement")
        >>> console = Console(width=120, record=True, file=open(os.devnull, "w"))
        >>> console.print(rich_table(trace, color_by="top_gap"))
        >>> "statement" in console.export_text()
        True
    """
    from rich.table import Table
    from rich.text import Text

    check_color_by(color_by)
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows={max_rows!r} must be a positive int or None")
    splits = resolve_prompt_lengths(trace, prompt_lengths)
    many = len(trace) > 1
    caption = MEANINGS[color_by]
    if any(n for n in splits):
        caption += "\nprompt tokens above the rule, generated tokens below"
    table = Table(title=f"per-token statistics, colored by {LABELS[color_by]}", caption=caption)
    if many:
        table.add_column("seq", justify="right")
    table.add_column("pos", justify="right")
    table.add_column("token", no_wrap=True, max_width=24)
    table.add_column("id", justify="right")
    for name in ("surprisal", "top_gap", "chosen_gap", "entropy"):
        style = "bold" if name == color_by else None
        table.add_column(LABELS[name], justify="right", header_style=style)
    table.add_column("rank", justify="right")
    table.add_column(f"top {alternatives} (p)", overflow="fold")

    for index, records in enumerate(records_by_sequence(trace)):
        rows = _rows_to_show(len(records), max_rows)
        last_sequence = index == len(trace) - 1
        for i in rows:
            if i is None:
                table.add_row(*([""] if many else []), "…", Text("…"), *[""] * 7)
                continue
            record = records[i]
            h = heat(color_by, record[color_by])
            style = "dim" if h is None else "rgb({},{},{})".format(*ramp(h, FOREGROUND_STOPS))
            cells = [
                str(record["position"]),
                Text(visible_token(record["token"], record["token_id"]), style=style),
                str(record["token_id"]),
            ]
            for name in ("surprisal", "top_gap", "chosen_gap", "entropy"):
                cells.append(Text(format_number(record[name]), style=style if name == color_by else ""))
            cells.append(format_number(record["rank"]))
            cells.append(Text(_alternatives_text(record, alternatives)))
            boundary = splits[index] is not None and i == splits[index] - 1 and splits[index] < len(records)
            end_section = boundary or (i == len(records) - 1 and many and not last_sequence)
            table.add_row(*([str(index)] if many else []), *cells, end_section=end_section)
    return table


def _rows_to_show(n: int, max_rows: int | None) -> list[int | None]:
    """Row indices to show; ``None`` marks the elided middle."""
    if max_rows is None or n <= max_rows:
        return list(range(n))
    head = max_rows // 2
    tail = max_rows - head
    return [*range(head), None, *range(n - tail, n)]


def _alternatives_text(record: dict[str, Any], count: int) -> str:
    return "  ".join(
        f"{visible_token(alt['token'], alt['token_id'])} {math.exp(alt['logprob']):.2f}"
        for alt in record["alternatives"][:count]
    )
