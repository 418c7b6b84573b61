"""The HTML view of a trace: one self-contained page (inline CSS and JS, no external resources)
in which every token is a span colored by a statistic; hovering shows its statistics and the top
alternatives, and a menu recolors the page.

Example:
    >>> import torch
    >>> from logit_processors.gaps import gap_stats
    >>> from logit_processors.gaps.trace import Trace, sequence_trace
    >>> stats = gap_stats(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    >>> trace = Trace([sequence_trace(torch.tensor([0, 0]), torch.tensor([1, 2]), stats, None)], top_k=2)
    >>> trace_html(trace, title="two tokens").startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..gaps.trace import Trace
from .style import (
    BACKGROUND_STOPS,
    COLOR_BY,
    GLYPHS,
    LABELS,
    MEANINGS,
    check_color_by,
    css_color,
    heat,
    part_of,
    records_by_sequence,
    resolve_prompt_lengths,
    visible_token,
)


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
    when the split is known (see :mod:`logit_processors.report`). A menu in the page recolors it by any
    of :data:`COLOR_BY`. The page uses no external resources (inline CSS and JavaScript only).

    Example:
        >>> import os, tempfile
        >>> from logit_processors.gaps import token_stats
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> trace = token_stats(model, tokenizer, "The with statement")
        >>> path = save_html(trace, os.path.join(tempfile.mkdtemp(), "trace.html"), color_by="top_gap")
        >>> "statement" in path.read_text(encoding="utf-8")
        True
    """
    check_color_by(color_by)
    splits = resolve_prompt_lengths(trace, prompt_lengths)
    title = title if title is not None else "Logit-gap trace"
    data: list[dict[str, Any]] = []
    sections = [
        _sequence_html(index, records, splits[index], color_by, data, len(trace) > 1)
        for index, records in enumerate(records_by_sequence(trace))
    ]
    return _PAGE.format(
        title=html.escape(title),
        style=_STYLE,
        options="".join(
            f'<option value="{name}"{" selected" if name == color_by else ""}>{LABELS[name]}</option>'
            for name in COLOR_BY
        ),
        meaning=html.escape(MEANINGS[color_by]),
        meanings=_script_json(MEANINGS),
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
        part = part_of(i, prompt_length)
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
    color = css_color(heat(color_by, record[color_by]))
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
        "↵\n" if c == "\n" else GLYPHS[c] if blank and c in GLYPHS else c if c in " \t" else visible_token(c)
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
        "colors": {name: css_color(heat(name, record[name])) for name in COLOR_BY},
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
    stops = ", ".join("rgb({}, {}, {})".format(*stop) for stop in BACKGROUND_STOPS)
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
