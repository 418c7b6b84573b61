"""Presentation: a :class:`~logit_processors.gaps.Trace` as a terminal table, an HTML heatmap, a plot;
and an attack-detection result as a verdict, a highlighted prompt and a page.

Three views of the same per-token statistics (see :mod:`logit_processors.gaps` for what they
mean), each colored by one of them (``color_by``):

* :func:`rich_table` (:mod:`.table`): a ``rich`` table for the terminal, one row per token;
* :func:`trace_html` / :func:`save_html` (:mod:`.html`): one self-contained HTML page (inline CSS and JS, no
  external resources) in which every token is a span colored by the chosen statistic; hovering
  a token shows its statistics and the top alternatives with their probabilities, and a menu
  recolors the page by another statistic;
* :func:`plot_trace` (:mod:`.plot`): a matplotlib figure of the gap and surprisal series of each sequence
  (matplotlib is optional: ``pip install matplotlib``).

Prompt and generated tokens are told apart when the split is known: pass ``prompt_lengths``
(the number of leading tokens of each sequence that belong to the prompt, e.g. for a
:func:`~logit_processors.gaps.token_stats` trace of prompt + output). A
:class:`~logit_processors.gaps.LogitGapMonitor` trace holds generated tokens only (its positions
start after the prompt) and is shown as generated without being told.

How colors are scaled: each statistic is mapped onto a fixed "heat" in [0, 1] (not rescaled per
trace, so two pages can be compared by eye), where 1 is the alarming end: a high surprisal,
chosen gap or entropy, or a *thin* top gap (the model torn between two tokens). See
:data:`~logit_processors.report.style.HEAT_SCALES`. The detection views (:mod:`.detection`) show a
:class:`~logit_processors.detection.DetectionResult` the same way.

Example:
    >>> import math, torch
    >>> from logit_processors.gaps import SequenceTrace, Trace
    >>> seq = SequenceTrace(
    ...     token_ids=torch.tensor([5, 6]), positions=torch.tensor([0, 1]),
    ...     top_gap=torch.tensor([math.nan, 0.1]), chosen_gap=torch.tensor([math.nan, 0.1]),
    ...     surprisal=torch.tensor([math.nan, 0.8]), entropy=torch.tensor([math.nan, 0.7]),
    ...     rank=torch.tensor([-1, 1]), top_ids=torch.tensor([[-1, -1], [7, 6]]),
    ...     top_logprobs=torch.tensor([[-math.inf, -math.inf], [-0.7, -0.8]]),
    ...     tokens=["Hello", " world"], top_tokens=[[None, None], [" there", " world"]])
    >>> trace = Trace([seq], top_k=2)
    >>> page = trace_html(trace, color_by="top_gap", prompt_lengths=[1])
    >>> page.startswith("<!DOCTYPE html>") and '> world</span>' in page
    True
    >>> rich_table(trace).row_count
    2
"""

from .detection import detection_html, highlighted_prompt, token_table, verdict_text
from .html import save_html, trace_html
from .plot import plot_trace
from .style import COLOR_BY, HEAT_SCALES, heat, visible_token
from .table import rich_table

__all__ = [
    "COLOR_BY",
    "HEAT_SCALES",
    "detection_html",
    "heat",
    "highlighted_prompt",
    "plot_trace",
    "rich_table",
    "save_html",
    "token_table",
    "trace_html",
    "verdict_text",
    "visible_token",
]
