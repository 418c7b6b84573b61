"""Rendering a :class:`~logit_processors.gaps.Trace`: a terminal table, an HTML heatmap, a plot.

Three views of the same per-token statistics (see :mod:`logit_processors.gaps` for what they
mean), each colored by one of them (``color_by``):

* :func:`rich_table`: a ``rich`` table for the terminal, one row per token;
* :func:`trace_html` / :func:`save_html`: one self-contained HTML page (inline CSS and JS, no
  external resources) in which every token is a span colored by the chosen statistic; hovering
  a token shows its statistics and the top alternatives with their probabilities, and a menu
  recolors the page by another statistic;
* :func:`plot_trace`: a matplotlib figure of the gap and surprisal series of each sequence
  (matplotlib is optional: ``pip install matplotlib``).

Prompt and generated tokens are told apart when the split is known: pass ``prompt_lengths``
(the number of leading tokens of each sequence that belong to the prompt, e.g. for a
:func:`~logit_processors.gaps.token_stats` trace of prompt + output). A
:class:`~logit_processors.gaps.LogitGapMonitor` trace holds generated tokens only (its positions
start after the prompt) and is shown as generated without being told.

How colors are scaled: each statistic is mapped onto a fixed "heat" in [0, 1] (not rescaled per
trace, so two pages can be compared by eye), where 1 is the alarming end: a high surprisal,
chosen gap or entropy, or a *thin* top gap (the model torn between two tokens). See
:data:`HEAT_SCALES`.

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

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .gaps import SequenceTrace, Trace

if TYPE_CHECKING:  # imported lazily at run time: rich is small, matplotlib is optional
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = [
    "COLOR_BY",
    "HEAT_SCALES",
    "heat",
    "plot_trace",
    "rich_table",
    "save_html",
    "trace_html",
    "visible_token",
]

#: The statistics a view can be colored by.
COLOR_BY: tuple[str, ...] = ("surprisal", "top_gap", "chosen_gap", "entropy")

#: Nats at which a statistic reaches full heat. For ``top_gap`` the scale runs the other way:
#: a gap of 0 (a coin flip between the two leading tokens) is full heat, a gap of 6 nats
#: (odds of 400:1) or more is none. 8 nats of surprisal is a chosen probability of ~3e-4;
#: 5 nats of entropy is as uncertain as a uniform choice among ~150 tokens.
HEAT_SCALES: dict[str, float] = {"surprisal": 8.0, "top_gap": 6.0, "chosen_gap": 8.0, "entropy": 5.0}

_LABELS = {"surprisal": "surprisal", "top_gap": "top gap", "chosen_gap": "chosen gap", "entropy": "entropy"}
_MEANINGS = {
    "surprisal": "-log p(token), nats: red = the model did not expect this token",
    "top_gap": "log p(top1) - log p(top2), nats: red = a thin margin, the model was torn",
    "chosen_gap": "log p(top1) - log p(token), nats: red = far below the model's favourite",
    "entropy": "entropy of the next-token distribution, nats: red = many plausible tokens",
}

# Characters that would be invisible (or break the layout) if shown as they are.
_GLYPHS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


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
    return "".join(_GLYPHS.get(c, _escape_control(c)) for c in token)


def _escape_control(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c


def heat(color_by: str, value: float | None) -> float | None:
    """Where ``value`` of statistic ``color_by`` lies on the 0 (calm) .. 1 (alarming) scale.

    ``None`` for a missing value (``nan``: the first token of a teacher-forced text).

    Example:
        >>> heat("surprisal", 4.0), heat("top_gap", 0.0), heat("top_gap", float("inf"))
        (0.5, 1.0, 0.0)
    """
    _check_color_by(color_by)
    if value is None or math.isnan(value):
        return None
    fraction = min(max(value / HEAT_SCALES[color_by], 0.0), 1.0)  # inf -> 1
    return 1.0 - fraction if color_by == "top_gap" else fraction


def _check_color_by(color_by: object) -> str:
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by={color_by!r} is not a statistic; use one of {', '.join(COLOR_BY)}")
    return color_by


def _ramp(h: float, stops: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """Linear interpolation through evenly spaced RGB ``stops`` at ``h`` in [0, 1]."""
    x = h * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    t = x - i
    return tuple(round(a + (b - a) * t) for a, b in zip(stops[i], stops[i + 1], strict=True))


# White -> amber -> red backgrounds (dark text stays readable on all three); green -> amber ->
# red text for terminals, readable on dark and light backgrounds alike.
_BACKGROUND_STOPS = ((255, 255, 255), (253, 224, 138), (239, 88, 88))
_FOREGROUND_STOPS = ((34, 197, 94), (234, 179, 8), (239, 68, 68))
_MISSING_BACKGROUND = "#eef1f5"


def _css_color(h: float | None) -> str:
    if h is None:
        return _MISSING_BACKGROUND
    return "rgb({}, {}, {})".format(*_ramp(h, _BACKGROUND_STOPS))


def _prompt_lengths(trace: Trace, prompt_lengths: int | Sequence[int | None] | None) -> list[int | None]:
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


def _part(index: int, prompt_length: int | None) -> str | None:
    if prompt_length is None:
        return None
    return "prompt" if index < prompt_length else "output"


def _records_by_sequence(trace: Trace) -> list[list[dict[str, Any]]]:
    grouped: list[list[dict[str, Any]]] = [[] for _ in trace]
    for record in trace.records():
        grouped[record["sequence"]].append(record)
    return grouped


def _format(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.{digits}f}"
    # A log-prob rounded a hair above 0 gives a surprisal of -1e-7: show it as 0.
    return text[1:] if text.startswith("-") and float(text) == 0 else text


# --------------------------------------------------------------------------------------------
# Terminal: a rich table


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
    separates prompt from generated tokens when the split is known (see the module docstring).
    With ``max_rows``, long traces keep their first and last rows around a ``…`` row.

    Example:
        >>> from rich.console import Console
        >>> from logit_processors.gaps import Trace
        >>> console = Console(width=120, record=True)           # doctest: +SKIP
        >>> console.print(rich_table(trace, color_by="top_gap"))  # doctest: +SKIP
    """
    from rich.table import Table
    from rich.text import Text

    _check_color_by(color_by)
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows={max_rows!r} must be a positive int or None")
    splits = _prompt_lengths(trace, prompt_lengths)
    many = len(trace) > 1
    caption = _MEANINGS[color_by]
    if any(n for n in splits):
        caption += "\nprompt tokens above the rule, generated tokens below"
    table = Table(title=f"per-token statistics, colored by {_LABELS[color_by]}", caption=caption)
    if many:
        table.add_column("seq", justify="right")
    table.add_column("pos", justify="right")
    table.add_column("token", no_wrap=True, max_width=24)
    table.add_column("id", justify="right")
    for name in ("surprisal", "top_gap", "chosen_gap", "entropy"):
        style = "bold" if name == color_by else None
        table.add_column(_LABELS[name], justify="right", header_style=style)
    table.add_column("rank", justify="right")
    table.add_column(f"top {alternatives} (p)", overflow="fold")

    for index, records in enumerate(_records_by_sequence(trace)):
        rows = _rows_to_show(len(records), max_rows)
        last_sequence = index == len(trace) - 1
        for i in rows:
            if i is None:
                table.add_row(*([""] if many else []), "…", Text("…"), *[""] * 7)
                continue
            record = records[i]
            h = heat(color_by, record[color_by])
            style = "dim" if h is None else "rgb({},{},{})".format(*_ramp(h, _FOREGROUND_STOPS))
            cells = [
                str(record["position"]),
                Text(visible_token(record["token"], record["token_id"]), style=style),
                str(record["token_id"]),
            ]
            for name in ("surprisal", "top_gap", "chosen_gap", "entropy"):
                cells.append(Text(_format(record[name]), style=style if name == color_by else ""))
            cells.append(_format(record["rank"]))
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


# --------------------------------------------------------------------------------------------
# HTML: a self-contained token heatmap


def trace_html(
    trace: Trace,
    *,
    color_by: str = "surprisal",
    title: str | None = None,
    prompt_lengths: int | Sequence[int | None] | None = None,
) -> str:
    """A complete, self-contained HTML page showing every token colored by ``color_by``.

    Tokens keep their spaces so the text reads naturally; whitespace-only tokens and newlines
    get visible glyphs (``␣``, ``⇥``, ``↵``, the latter followed by a real line break). Token
    strings are HTML-escaped. Hovering a token shows position, id, surprisal and probability,
    both gaps, entropy, rank and the top alternatives with their probabilities. Prompt tokens
    are shown in grey and generated ones underlined, with a ``▶`` where generation starts,
    when the split is known (see the module docstring). A menu in the page recolors it by any
    of :data:`COLOR_BY`. The page uses no external resources (inline CSS and JavaScript only).

    Example:
        >>> from logit_processors.report import save_html
        >>> save_html(trace, "trace.html", color_by="top_gap")   # doctest: +SKIP
    """
    _check_color_by(color_by)
    splits = _prompt_lengths(trace, prompt_lengths)
    title = title if title is not None else "Logit-gap trace"
    data: list[dict[str, Any]] = []
    sections = [
        _sequence_html(index, records, splits[index], color_by, data, len(trace) > 1)
        for index, records in enumerate(_records_by_sequence(trace))
    ]
    return _PAGE.format(
        title=html.escape(title),
        style=_STYLE,
        options="".join(
            f'<option value="{name}"{" selected" if name == color_by else ""}>{_LABELS[name]}</option>'
            for name in COLOR_BY
        ),
        meaning=html.escape(_MEANINGS[color_by]),
        meanings=_script_json(_MEANINGS),
        ramp=_css_ramp(),
        sections="\n".join(sections),
        data=_script_json(data),
        script=_SCRIPT,
    )


def save_html(trace: Trace, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`trace_html` (``kwargs`` passed on) to ``path`` as UTF-8; returns the path."""
    path = Path(path)
    path.write_text(trace_html(trace, **kwargs), encoding="utf-8")
    return path


def _sequence_html(
    index: int,
    records: list[dict[str, Any]],
    prompt_length: int | None,
    color_by: str,
    data: list[dict[str, Any]],
    many: bool,
) -> str:
    spans = []
    for i, record in enumerate(records):
        part = _part(i, prompt_length)
        if part == "output" and i == prompt_length and prompt_length > 0:
            spans.append('<span class="boundary" title="generation starts here">▶</span>')
        spans.append(_token_span(len(data), record, part, color_by))
        data.append(_token_data(record, part))
    heading = f"Sequence {index}: " if many else ""
    return (
        f'<section class="seq"><h2>{heading}{_summary(records, prompt_length)}</h2>'
        f'<div class="text">{"".join(spans) or "<em>(no tokens)</em>"}</div></section>'
    )


def _token_span(i: int, record: dict[str, Any], part: str | None, color_by: str) -> str:
    classes = "tok" + (f" {part}" if part else "")
    color = _css_color(heat(color_by, record[color_by]))
    return f'<span class="{classes}" data-i="{i}" style="background:{color}">{_flow_text(record)}</span>'


def _flow_text(record: dict[str, Any]) -> str:
    """The token as it reads in running text, HTML-escaped, with invisible tokens made visible.

    Spaces and tabs stay as they are (the text is ``white-space: pre-wrap``) unless the token is
    whitespace only, where they become ``␣`` / ``⇥``; a newline is ``↵`` followed by a real line
    break, so the page keeps the text's lines.
    """
    token = record["token"]
    if token is None or token == "":
        return html.escape(visible_token(token, record["token_id"]))
    blank = token.strip() == ""
    text = "".join(
        "↵\n" if c == "\n" else _GLYPHS[c] if blank and c in _GLYPHS else c if c in " \t" else visible_token(c)
        for c in token
    )
    return html.escape(text, quote=False)


def _token_data(record: dict[str, Any], part: str | None) -> dict[str, Any]:
    stats = {name: _json_number(record[name]) for name in ("surprisal", "top_gap", "chosen_gap", "entropy")}
    surprisal = record["surprisal"]
    return {
        "token": visible_token(record["token"], record["token_id"]),
        "id": record["token_id"],
        "pos": record["position"],
        "seq": record["sequence"],
        "part": part,
        "rank": record["rank"],
        "p": None if math.isnan(surprisal) else math.exp(-surprisal),
        "stats": stats,
        "colors": {name: _css_color(heat(name, record[name])) for name in COLOR_BY},
        "alts": [
            {"token": visible_token(a["token"], a["token_id"]), "id": a["token_id"], "p": math.exp(a["logprob"])}
            for a in record["alternatives"]
        ],
    }


def _summary(records: list[dict[str, Any]], prompt_length: int | None) -> str:
    """'N tokens; mean surprisal X nats (perplexity Y)', per part when the split is known."""
    if prompt_length is None:
        return _part_summary("tokens", records)
    parts = [("prompt tokens", records[:prompt_length]), ("generated tokens", records[prompt_length:])]
    return " · ".join(_part_summary(name, recs) for name, recs in parts if recs)


def _part_summary(name: str, records: list[dict[str, Any]]) -> str:
    values = [r["surprisal"] for r in records if not math.isnan(r["surprisal"])]
    if not values or any(math.isinf(v) for v in values):
        return f"{len(records)} {name}"
    mean = sum(values) / len(values)
    return f"{len(records)} {name}, mean surprisal {mean:.2f} nats (perplexity {math.exp(mean):.1f})"


def _json_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _script_json(value: Any) -> str:
    """JSON safe to inline in a <script> element: no '<', '>' or '&' can end or confuse it."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _css_ramp() -> str:
    stops = ", ".join("rgb({}, {}, {})".format(*stop) for stop in _BACKGROUND_STOPS)
    return f"linear-gradient(to right, {stops})"


_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 70rem; padding: 0 1rem; color: #0f172a; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
h2 { font-size: .95rem; font-weight: 500; color: #475569; margin: 1.2rem 0 .4rem; }
.controls { display: flex; flex-wrap: wrap; gap: .6rem 1.2rem; align-items: center; font-size: .9rem; }
.ramp { display: inline-block; width: 8rem; height: .8rem; border: 1px solid #cbd5e1; vertical-align: middle; }
.text { font: 14px/1.9 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre-wrap;
        word-break: break-word; border: 1px solid #e2e8f0; border-radius: 6px; padding: .8rem; }
.tok { box-shadow: inset -1px 0 0 rgba(15, 23, 42, .12); border-radius: 2px; cursor: default; }
.tok:hover, .tok.pinned { outline: 2px solid #1d4ed8; }
.tok.prompt { color: #64748b; }
.tok.output { font-weight: 600; border-bottom: 2px solid #2563eb; }
.boundary { color: #2563eb; font-weight: 700; margin: 0 .2rem; }
.key .tok { padding: 0 .3rem; }
#tip { position: fixed; z-index: 10; max-width: 24rem; background: #0f172a; color: #f8fafc;
       border-radius: 6px; padding: .6rem .8rem; font-size: 13px; box-shadow: 0 6px 20px rgba(0,0,0,.25);
       pointer-events: none; }
#tip .head { font: 600 14px ui-monospace, Menlo, Consolas, monospace; margin-bottom: .3rem; }
#tip table { border-collapse: collapse; width: 100%; }
#tip td { padding: 1px .4rem 1px 0; white-space: nowrap; }
#tip td.num { text-align: right; font-variant-numeric: tabular-nums; }
#tip .bar { display: inline-block; height: .55rem; background: #f59e0b; vertical-align: middle; }
#tip .chosen { color: #fbbf24; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<div class="controls">
<label>Color by <select id="color-by">{options}</select></label>
<span><span class="ramp" style="background:{ramp}"></span> calm → alarming</span>
<span id="meaning">{meaning}</span>
</div>
<p class="controls key"><span class="tok prompt">prompt</span><span class="tok output">generated</span>
<span>Hover a token for its statistics and alternatives; click to pin.</span></p>
{sections}
<div id="tip" hidden></div>
<script type="application/json" id="trace-data">{data}</script>
<script type="application/json" id="meanings">{meanings}</script>
<script>{script}</script>
</body>
</html>
"""

# The tooltip is built with DOM calls and textContent, never innerHTML, so token strings can
# never inject markup.
_SCRIPT = """
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const meanings = JSON.parse(document.getElementById("meanings").textContent);
  const tip = document.getElementById("tip");
  let pinned = null;
  function num(v, digits) {
    if (v === null || v === undefined) return "\\u2013";
    if (typeof v === "string") return v;
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function row(table, cells) {
    const tr = table.insertRow();
    cells.forEach(function (c) {
      const td = tr.insertCell();
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      if (typeof c === "string" && /^[-0-9.]/.test(c)) td.className = "num";
    });
    return tr;
  }
  function fill(d) {
    tip.replaceChildren();
    tip.appendChild(el("div", d.token + "   id " + d.id + "  pos " + d.pos + (d.part ? "  (" + d.part + ")" : ""), "head"));
    const stats = el("table");
    row(stats, ["surprisal", num(d.stats.surprisal) + " nats", "p", num(d.p, 4)]);
    row(stats, ["top gap", num(d.stats.top_gap), "chosen gap", num(d.stats.chosen_gap)]);
    row(stats, ["entropy", num(d.stats.entropy), "rank", d.rank === null ? "\\u2013" : String(d.rank)]);
    tip.appendChild(stats);
    if (d.alts.length) {
      tip.appendChild(el("div", "top alternatives", "head"));
      const alts = el("table");
      d.alts.forEach(function (a) {
        const bar = el("span", undefined, "bar");
        bar.style.width = Math.max(1, Math.round(a.p * 80)) + "px";
        const tr = row(alts, [a.token, num(a.p, 4), bar]);
        if (a.id === d.id) tr.className = "chosen";
      });
      tip.appendChild(alts);
    } else {
      tip.appendChild(el("div", "no prediction (first token)"));
    }
  }
  function place(ev) {
    const pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    let x = ev.clientX + pad, y = ev.clientY + pad;
    if (x + w > window.innerWidth) x = Math.max(0, ev.clientX - w - pad);
    if (y + h > window.innerHeight) y = Math.max(0, ev.clientY - h - pad);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  document.querySelectorAll(".tok[data-i]").forEach(function (span) {
    const d = data[Number(span.dataset.i)];
    span.addEventListener("mouseenter", function (ev) { if (!pinned) { fill(d); tip.hidden = false; place(ev); } });
    span.addEventListener("mousemove", function (ev) { if (!pinned) place(ev); });
    span.addEventListener("mouseleave", function () { if (!pinned) tip.hidden = true; });
    span.addEventListener("click", function (ev) {
      if (pinned) pinned.classList.remove("pinned");
      if (pinned === span) { pinned = null; tip.hidden = true; return; }
      pinned = span; span.classList.add("pinned"); fill(d); tip.hidden = false; place(ev);
    });
  });
  document.getElementById("color-by").addEventListener("change", function (ev) {
    const stat = ev.target.value;
    document.getElementById("meaning").textContent = meanings[stat];
    document.querySelectorAll(".tok[data-i]").forEach(function (span) {
      span.style.background = data[Number(span.dataset.i)].colors[stat];
    });
  });
})();
"""


# --------------------------------------------------------------------------------------------
# Plot: gap and surprisal series


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
    when the split is known (see the module docstring); short sequences get their tokens as
    x-axis labels. Infinite values (a lone unmasked token) are left out of the lines. With
    ``path`` the figure is also saved there (format from the extension, e.g. ``.png``, ``.svg``).

    The figure is built without ``pyplot`` (an Agg canvas, no global state, no window), so it
    works on headless machines; in a notebook it displays as the cell's value. Needs matplotlib
    (``pip install matplotlib``).

    Example:
        >>> fig = plot_trace(trace, "trace.png", prompt_lengths=[12])   # doctest: +SKIP
    """
    Figure, FigureCanvasAgg = _matplotlib()
    splits = _prompt_lengths(trace, prompt_lengths)
    longest = max((len(seq) for seq in trace), default=1)
    figure = Figure(figsize=(min(18.0, max(7.0, 0.22 * longest)), 3.2 * max(len(trace), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows=max(len(trace), 1), ncols=1, squeeze=False)[:, 0]
    for index, seq in enumerate(trace):
        _plot_sequence(axes[index], seq, splits[index], f"sequence {index}" if len(trace) > 1 else None)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plot_trace() needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'logit-processors[plot]')"
        ) from error
    return Figure, FigureCanvasAgg


def _plot_sequence(ax, seq: SequenceTrace, prompt_length: int | None, title: str | None) -> None:
    x = list(range(len(seq)))
    for name, color in _PLOTTED:
        values = [v if math.isfinite(v) else math.nan for v in getattr(seq, name).tolist()]
        ax.plot(x, values, marker=".", markersize=4, linewidth=1.2, color=color, label=_LABELS[name])
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
