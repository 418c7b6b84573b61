"""logit_processors.report: the terminal table, the HTML heatmap and the plot of a Trace."""

from __future__ import annotations

import html
import io
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from logit_processors import LogitGapMonitor, report
from logit_processors.gaps import Trace, token_stats
from logit_processors.report import heat, plot_trace, rich_table, save_html, style, trace_html, visible_token

# Markup characters, a tab, a blank line and runs of spaces: the tokens HTML must escape or show.
TEXT = 'if a < b && c > "d":\n\treturn x  # <done>\n\n'
HOSTILE = ["<script>alert(1)</script>", '"&amp;', "</script><b>", "\n", "  ", ""]


@pytest.fixture(scope="module")
def trace(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    return token_stats(model, tokenizer, TEXT)


def hostile_trace() -> Trace:
    """A trace whose token strings and alternatives try to break out of the page."""
    records = []
    for i, token in enumerate(HOSTILE):
        records.append(
            {
                "sequence": 0, "position": i, "token_id": 10 + i, "token": token,
                "top_gap": 0.5 * i if i else None, "chosen_gap": 0.0 if i else None,
                "surprisal": 1.0 + i if i else None, "entropy": 2.0 if i else None, "rank": 0 if i else None,
                "alternatives": [] if i == 0 else [
                    {"token_id": 10 + i, "token": token, "logprob": -1.0 - i},
                    {"token_id": 99, "token": "</script>", "logprob": -3.0},
                ],
            }
        )
    document = {"format": "logit_processors.gaps.Trace", "version": 1, "top_k": 2,
                "sequences": [{"sequence": 0, "records": records}]}
    return Trace.from_json(json.dumps(document))


class PageParser(HTMLParser):
    """Collects the token spans, every start tag, and the contents of the JSON script blocks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self.scripts: dict[str, str] = {}
        self._span = None
        self._script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "span" and "data-i" in attrs:
            self._span = {"classes": attrs["class"].split(), "i": int(attrs["data-i"]), "style": attrs["style"],
                          "text": ""}
        if tag == "script":
            self._script = attrs.get("id", "code")
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.spans.append(self._span)
            self._span = None
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._span is not None:
            self._span["text"] += data
        if self._script is not None:
            self.scripts[self._script] += data


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def flow(token: str) -> str:
    """How a token must read in the page: as is, newlines as '↵' + line break; blank tokens visible."""
    if token == "":
        return "∅"
    if token.strip() == "":
        token = token.replace(" ", "␣").replace("\t", "⇥").replace("\r", "␍")
    return token.replace("\n", "↵\n")


# --------------------------------------------------------------------------------------------
# Helpers


def test_visible_token():
    assert visible_token(" a\tb\nc\r") == "␣a⇥b↵c␍"
    assert visible_token("\x00\x7f") == "\\x00\\x7f"
    assert visible_token(None, 7) == "[7]"
    assert visible_token(None) == "[?]"
    assert visible_token("") == "∅"


def test_format_numbers():
    assert style.format_number(-1e-7) == "0.00" and style.format_number(-0.5) == "-0.50"
    assert style.format_number(math.nan) == "–" and style.format_number(math.inf) == "inf" and style.format_number(None) == "–"
    assert style.format_number(3) == "3"


def test_heat_scales_and_direction():
    assert heat("surprisal", 0.0) == 0.0
    assert heat("surprisal", 100.0) == 1.0
    assert heat("surprisal", math.inf) == 1.0
    assert heat("chosen_gap", report.HEAT_SCALES["chosen_gap"] / 2) == 0.5
    assert heat("top_gap", 0.0) == 1.0  # a coin flip is the alarming end
    assert heat("top_gap", math.inf) == 0.0
    assert heat("entropy", math.nan) is None
    assert heat("entropy", None) is None
    with pytest.raises(ValueError, match="color_by='rank'"):
        heat("rank", 1.0)


# --------------------------------------------------------------------------------------------
# HTML


@pytest.mark.integration
def test_html_is_self_contained_and_lists_every_token(trace):
    page = trace_html(trace)
    parsed = parse(page)
    tokens = trace[0].tokens
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert [s["text"] for s in parsed.spans] == [flow(t) for t in tokens]
    assert [s["i"] for s in parsed.spans] == list(range(len(tokens)))
    # No external resources: no src/href attributes, no stylesheet links, no url() in CSS.
    assert all(tag not in ("link", "img", "iframe") for tag, _ in parsed.tags)
    assert all("src" not in attrs and "href" not in attrs for _, attrs in parsed.tags)
    assert "url(" not in page and "@import" not in page
    # The raw markup holds every token string escaped ("<" and "&" never appear bare in a span).
    for token in tokens:
        assert f">{html.escape(flow(token), quote=False)}</span>" in page
    assert '<span class="tok" data-i="2" style="background:rgb(' in page and "> &lt;</span>" in page


@pytest.mark.integration
def test_html_hover_data_has_statistics_and_alternatives(trace):
    parsed = parse(trace_html(trace, color_by="top_gap"))
    data = json.loads(parsed.scripts["trace-data"])
    records = trace.records()
    assert len(data) == len(records)
    for entry, record in zip(data, records, strict=True):
        assert entry["token"] == visible_token(record["token"], record["token_id"])
        assert entry["id"] == record["token_id"] and entry["pos"] == record["position"]
        assert len(entry["alts"]) == len(record["alternatives"])
        for alt, expected in zip(entry["alts"], record["alternatives"], strict=True):
            assert alt["id"] == expected["token_id"]
            assert alt["p"] == pytest.approx(math.exp(expected["logprob"]))
        if record["rank"] is None:  # the first token: nothing predicted it
            assert entry["stats"]["surprisal"] is None and entry["p"] is None
        else:
            assert entry["stats"]["surprisal"] == pytest.approx(record["surprisal"])
            assert entry["p"] == pytest.approx(math.exp(-record["surprisal"]))
            assert len(entry["alts"]) == trace.top_k
    # Colored by top gap: each span's background is that statistic's color.
    for span, entry in zip(parsed.spans, data, strict=True):
        assert span["style"] == f"background:{entry['colors']['top_gap']}"


def test_html_escapes_hostile_tokens():
    page = trace_html(hostile_trace(), title="<i>t</i>")
    parsed = parse(page)
    assert "<script>alert" not in page and "<b>" not in page and "<i>t</i>" not in page
    assert [s["text"] for s in parsed.spans] == [flow(t) for t in HOSTILE]
    # "</script>" inside the data must not end the script element early: the JSON still parses.
    data = json.loads(parsed.scripts["trace-data"])
    assert data[0]["token"] == HOSTILE[0]
    assert data[1]["alts"][1]["token"] == "</script>"
    assert set(parsed.scripts) == {"trace-data", "meanings", "code"}


def test_html_marks_prompt_and_generated_tokens():
    parsed = parse(trace_html(hostile_trace(), prompt_lengths=[2]))
    parts = [[c for c in s["classes"] if c != "tok"] for s in parsed.spans]
    assert parts == [["prompt"]] * 2 + [["output"]] * 4
    data = json.loads(parsed.scripts["trace-data"])
    assert [d["part"] for d in data] == ["prompt"] * 2 + ["output"] * 4
    # Unknown split: no classes.
    unknown = parse(trace_html(hostile_trace()))
    assert all(s["classes"] == ["tok"] for s in unknown.spans)


@pytest.mark.integration
def test_monitor_trace_is_shown_as_generated(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    inputs = tokenizer(["The if statement"], return_tensors="pt")
    out = model.generate(**inputs, logits_processor=[monitor], max_new_tokens=5, do_sample=False,
                         return_dict_in_generate=True)
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    parsed = parse(trace_html(trace))
    assert len(parsed.spans) == len(trace[0])
    assert all("output" in s["classes"] for s in parsed.spans)


def test_html_several_sequences_and_save(tmp_path):
    hostile = hostile_trace()
    both = Trace([hostile[0], hostile[0]], top_k=hostile.top_k)
    path = save_html(both, tmp_path / "t.html", color_by="entropy", prompt_lengths=[1, None])
    page = path.read_text(encoding="utf-8")
    assert "Sequence 0" in page and "Sequence 1" in page
    assert len(parse(page).spans) == 2 * len(HOSTILE)
    assert '<option value="entropy" selected>' in page


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"color_by": "logit"}, "color_by"), ({"prompt_lengths": [7]}, "prompt_lengths"),
     ({"prompt_lengths": [1, 2]}, "prompt_lengths"), ({"prompt_lengths": -1}, "prompt_lengths")],
)
def test_html_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trace_html(hostile_trace(), **kwargs)


# The page's script, run against a minimal fake DOM: hovering fills the tooltip with the
# statistics and alternatives, the menu recolors the tokens.
_DOM_HARNESS = r"""
const fs = require("fs");
const page = fs.readFileSync(process.argv[1], "utf8");
const grab = (id) => page.match(new RegExp('<script type="application/json" id="' + id + '">([\\s\\S]*?)</script>'))[1];
const script = page.match(/<script>([\s\S]*?)<\/script>/)[1];
function node(tag) {
  return { tag, children: [], textContent: "", className: "", style: {}, hidden: true, dataset: {}, handlers: {},
    classList: { add() {}, remove() {} },
    appendChild(c) { this.children.push(c); return c; }, replaceChildren() { this.children = []; },
    addEventListener(k, f) { this.handlers[k] = f; },
    insertRow() { return this.appendChild(node("tr")); }, insertCell() { return this.appendChild(node("td")); },
    offsetWidth: 100, offsetHeight: 50 };
}
const text = (n) => [n.textContent, ...n.children.map(text)].filter((t) => t).join("|");
const spans = [...page.matchAll(/<span class="tok[^"]*" data-i="(\d+)"/g)].map((m) => {
  const s = node("span"); s.dataset.i = m[1]; return s; });
const els = { "trace-data": { textContent: grab("trace-data") }, "meanings": { textContent: grab("meanings") },
  "tip": node("div"), "color-by": node("select"), "meaning": node("span") };
global.document = { getElementById: (id) => els[id], createElement: node, querySelectorAll: () => spans };
global.window = { innerWidth: 800, innerHeight: 600 };
global.Node = Object;
new Function(script)();
const tips = spans.map((s) => { s.handlers.mouseenter({ clientX: 5, clientY: 5 });
  const t = { shown: !els.tip.hidden, text: text(els.tip) }; s.handlers.mouseleave(); return t; });
els["color-by"].handlers.change({ target: { value: "entropy" } });
console.log(JSON.stringify({ tips, colors: spans.map((s) => s.style.background), meaning: els.meaning.textContent }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_html_script_shows_tooltips_and_recolors(tmp_path):
    trace = hostile_trace()
    path = save_html(trace, tmp_path / "t.html")
    result = subprocess.run(["node", "-e", _DOM_HARNESS, str(path)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    data = json.loads(parse(path.read_text(encoding="utf-8")).scripts["trace-data"])
    assert all(tip["shown"] for tip in out["tips"])
    assert "no prediction" in out["tips"][0]["text"]
    second = out["tips"][1]["text"]
    assert "surprisal" in second and "top alternatives" in second and "</script>" in second
    assert f"{math.exp(-3.0):.4f}" in second  # the alternative's probability
    assert out["colors"] == [d["colors"]["entropy"] for d in data]
    assert out["meaning"].startswith("entropy")


# --------------------------------------------------------------------------------------------
# Terminal table


def render(table, width=200) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(table)
    return console.export_text()


@pytest.mark.integration
def test_rich_table_rows_and_columns(trace):
    table = rich_table(trace, color_by="chosen_gap")
    assert table.row_count == len(trace[0])
    headers = [str(c.header) for c in table.columns]
    assert headers[:8] == ["pos", "token", "id", "surprisal", "top gap", "chosen gap", "entropy", "rank"]
    text = render(table)
    for token, token_id in zip(trace[0].tokens, trace[0].token_ids.tolist(), strict=True):
        assert visible_token(token, token_id) in text
    assert "colored by chosen gap" in text


def test_rich_table_markup_is_not_interpreted():
    # "[b]" in a token must show as is, not turn on bold (tokens are Text, never markup).
    hostile = hostile_trace()
    hostile[0].tokens[1] = "[b]x[/b]"
    assert "[b]x[/b]" in render(rich_table(hostile))


def test_rich_table_max_rows_and_split():
    hostile = hostile_trace()
    table = rich_table(hostile, max_rows=4, prompt_lengths=[2])
    assert table.row_count == 5  # 2 first + "…" + 2 last
    text = render(table)
    assert "…" in text and "prompt tokens above the rule" in text
    assert "├" in text  # the rule between prompt and generated rows
    with pytest.raises(ValueError, match="max_rows"):
        rich_table(hostile, max_rows=0)


def test_rich_table_several_sequences():
    hostile = hostile_trace()
    table = rich_table(Trace([hostile[0], hostile[0]], top_k=2))
    assert str(table.columns[0].header) == "seq" and table.row_count == 2 * len(HOSTILE)


# --------------------------------------------------------------------------------------------
# Plot


@pytest.mark.integration
def test_plot_trace_png(trace, tmp_path):
    path = tmp_path / "t.png"
    figure = plot_trace(trace, path, prompt_lengths=[4])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figure.axes
    labels = [line.get_label() for line in ax.lines]
    assert labels[:3] == ["surprisal", "top gap", "chosen gap"]
    assert any(list(line.get_xdata()) == [3.5, 3.5] for line in ax.lines)  # where generation starts
    assert len(ax.get_xticklabels()) == len(trace[0])


def test_plot_trace_several_sequences_svg(tmp_path):
    hostile = hostile_trace()
    figure = plot_trace(Trace([hostile[0], hostile[0]], top_k=2), tmp_path / "t.svg")
    assert len(figure.axes) == 2
    assert (tmp_path / "t.svg").read_text().lstrip().startswith("<?xml")


def test_plot_trace_without_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_trace(hostile_trace())


def test_report_does_not_import_matplotlib_eagerly():
    code = "import sys, logit_processors.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "False", result.stderr


def test_prompt_lengths_default_from_positions():
    hostile = hostile_trace()
    seq = hostile[0]
    shifted = type(seq)(**{**seq.__dict__, "positions": seq.positions + 3})
    assert style.resolve_prompt_lengths(Trace([seq, shifted]), None) == [None, 0]
    assert torch.equal(seq.positions, torch.arange(len(HOSTILE)))
