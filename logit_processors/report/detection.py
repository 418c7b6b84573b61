"""The views of an attack-detection result: a verdict line, the prompt with its suspicious span
highlighted, a per-token table of the CUSUM, and a self-contained HTML page.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> from logit_processors.detection import Detector, load_benign
    >>> model, tokenizer = load_tiny_gpt2()
    >>> benign = [p.text for p in load_benign("fit", "chat") if " " in p.text]   # two tokens or more
    >>> detector = Detector.fit(model, tokenizer, benign, chat_template=False, probe=False)
    >>> result = detector.score("What is 2 + 2?")
    >>> str(verdict_text(result)).split()[0] in ("FLAGGED", "not")
    True
    >>> detection_html(result, tokenizer).startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import html

from .html import trace_html
from .style import visible_token


def verdict_text(result):
    from rich.text import Text

    text = Text()
    text.append("FLAGGED" if result.flagged else "not flagged", style="bold red" if result.flagged else "bold green")
    text.append(f"  score {result.score:.2f}  threshold {result.threshold:.2f}")
    if result.channels:
        text.append(" (" + ", ".join(f"{name} {value:.2f}" for name, value in result.channels.items()) + ")")
    if result.span is not None:
        text.append(f"  suspicious span: tokens {result.span[0]}-{result.span[1] - 1}")
    if result.refusal_gap is not None:
        text.append(f"  first-step refusal gap {result.refusal_gap:+.2f} nats")
    return text


def _span_mask(result) -> list[bool]:
    span = result.span_tokens
    return [span is not None and span[0] <= i < span[1] for i in range(len(result.positions))]


def highlighted_prompt(result, tokenizer):
    """The user's text, token by token, the suspicious span in reverse red."""
    from rich.text import Text

    text = Text()
    style = "bold white on red" if result.flagged else "bold black on yellow"
    for token, inside in zip(result.stats.tokens(tokenizer), _span_mask(result), strict=True):
        text.append(token, style=style if inside else "")
    return text


def token_table(result, tokenizer):
    from rich.table import Table

    table = Table(title="per-token CUSUM input x_t (benign: mean 0, sd 1) and CUSUM S_t")
    for name in ("pos", "token", "surprisal", "x_t", "S_t", "span"):
        table.add_column(name, justify="left" if name == "token" else "right")
    tokens = result.stats.tokens(tokenizer)
    for i, inside in enumerate(_span_mask(result)):
        table.add_row(str(int(result.positions[i])), visible_token(tokens[i]),
                      f"{float(result.stats.surprisal[i]):.2f}", f"{float(result.token_scores[i]):+.2f}",
                      f"{float(result.curve[i]):.2f}", "◆" if inside else "", style="red" if inside else None)
    return table


def detection_html(result, tokenizer, *, title: str = "Attack detection") -> str:
    """A page: the token heatmap of :func:`logit_processors.report.trace_html` (surprisal), the
    suspicious span outlined, the verdict, and the CUSUM curve as an inline SVG."""
    page = trace_html(result.stats.trace(tokenizer), color_by="surprisal", title=title)
    span = result.span_tokens
    outline = "#dc2626" if result.flagged else "#ca8a04"
    rules = ""
    if span is not None:
        selectors = ", ".join(f'.tok[data-i="{i}"]' for i in range(*span))
        rules = f"{selectors} {{ outline: 2px solid {outline}; outline-offset: -1px; }}"
    verdict = (f'<p class="verdict" style="font-size:1.05rem"><b style="color:{outline if result.flagged else "#15803d"}">'
               f'{"FLAGGED" if result.flagged else "not flagged"}</b>: score {result.score:.2f} '
               f'(threshold {result.threshold:.2f}, {html.escape(_span_words(result))})'
               + (f"; first-step refusal gap {result.refusal_gap:+.2f} nats" if result.refusal_gap is not None else "")
               + "</p>" + _cusum_svg(result))
    page = page.replace("</style>", rules + "\n</style>", 1)
    return page.replace('<div class="controls">', verdict + '\n<div class="controls">', 1)


def _span_words(result) -> str:
    if result.span is None:
        return "no suspicious span"
    return f"suspicious span outlined: {result.span_text!r}" if result.span_text is not None else "span outlined"


def _cusum_svg(result, width: int = 640, height: int = 120) -> str:
    curve = [float(v) for v in result.curve]
    if not curve:
        return ""
    top = max(max(curve), result.threshold, 1e-6) * 1.1
    step = width / max(len(curve) - 1, 1)

    def y(v: float) -> float:
        return height - 4 - (height - 8) * min(v, top) / top

    points = " ".join(f"{i * step:.1f},{y(v):.1f}" for i, v in enumerate(curve))
    line = y(result.threshold)
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="CUSUM curve" '
            f'style="border:1px solid #e2e8f0;border-radius:6px;margin:.3rem 0">'
            f'<line x1="0" x2="{width}" y1="{line:.1f}" y2="{line:.1f}" stroke="#dc2626" stroke-dasharray="4 3"/>'
            f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{points}"/>'
            f'<text x="6" y="14" font-size="11" fill="#475569">CUSUM S_t over the user tokens '
            f'(dashed: threshold)</text></svg>')
