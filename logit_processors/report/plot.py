"""The plotted view of a trace: surprisal, top gap and chosen gap per token, one panel per
sequence (matplotlib, optional: ``pip install matplotlib``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..gaps.trace import SequenceTrace, Trace
from ..optional import matplotlib_figure
from .style import LABELS, resolve_prompt_lengths, visible_token

if TYPE_CHECKING:  # matplotlib is imported when a plot is made
    from matplotlib.figure import Figure



_PLOTTED = (("surprisal", "#dc2626"), ("top_gap", "#2563eb"), ("chosen_gap", "#f59e0b"))
_MAX_TICK_LABELS = 48  # label the x axis with tokens only when they stay readable


def plot_trace(
    trace: Trace,
    path: str | os.PathLike | None = None,
    *,
    prompt_lengths: int | Sequence[int | None] | None = None,
) -> Figure:
    """A matplotlib figure with one panel per sequence: surprisal, top gap and chosen gap per token.

    All three are in nats (a gap is a log-odds). A dashed line marks where generation starts
    when the split is known (see :mod:`logit_processors.report`); short sequences get their tokens as
    x-axis labels. Infinite values (a lone unmasked token) are left out of the lines. With
    ``path`` the figure is also saved there (format from the extension, e.g. ``.png``, ``.svg``).

    The figure is built without ``pyplot`` (an Agg canvas, no global state, no window), so it
    works on headless machines; in a notebook it displays as the cell's value. Needs matplotlib
    (``pip install matplotlib``).

    Example:
        >>> from logit_processors.gaps import token_stats
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> trace = token_stats(model, tokenizer, "The with statement is used to wrap a block")
        >>> fig = plot_trace(trace, prompt_lengths=[3])       # needs matplotlib; a path saves it too
        >>> len(fig.axes)
        1
    """
    Figure, FigureCanvasAgg = matplotlib_figure("plot_trace()")
    splits = resolve_prompt_lengths(trace, prompt_lengths)
    longest = max((len(seq) for seq in trace), default=1)
    figure = Figure(figsize=(min(18.0, max(7.0, 0.22 * longest)), 3.2 * max(len(trace), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows=max(len(trace), 1), ncols=1, squeeze=False)[:, 0]
    for index, seq in enumerate(trace):
        _plot_sequence(axes[index], seq, splits[index], f"sequence {index}" if len(trace) > 1 else None)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _plot_sequence(ax, seq: SequenceTrace, prompt_length: int | None, title: str | None) -> None:
    x = list(range(len(seq)))
    for name, color in _PLOTTED:
        values = [v if math.isfinite(v) else math.nan for v in getattr(seq, name).tolist()]
        ax.plot(x, values, marker=".", markersize=4, linewidth=1.2, color=color, label=LABELS[name])
    if prompt_length is not None and 0 < prompt_length < len(seq):
        ax.axvline(prompt_length - 0.5, color="#475569", linestyle="--", linewidth=1)
        ax.annotate(
            "generated →", (prompt_length - 0.5, 1), xycoords=("data", "axes fraction"),
            xytext=(4, -12), textcoords="offset points", fontsize=8, color="#475569",
        )
    if 0 < len(seq) <= _MAX_TICK_LABELS and seq.tokens is not None:
        # "$" would start matplotlib's mathtext.
        labels = [visible_token(t, i).replace("$", r"\$") for t, i in zip(seq.tokens, seq.token_ids.tolist(), strict=True)]
        ax.set_xticks(x, labels, rotation=90, fontsize=8)
    else:
        ax.set_xlabel("token index")
    ax.set_ylabel("nats")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    if title:
        ax.set_title(title, fontsize=10)
