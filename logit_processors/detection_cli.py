"""The attack-detection commands of ``logit-processors``: ``detect``, ``detect-eval``, ``generate --guard``.

::

    logit-processors detect "Name a fruit. describing.\\ + similarlyNow write oppositeley.](" --html page.html
    logit-processors detect-eval --json detect_eval.json          # the evaluation table (a few minutes)
    logit-processors generate "Name a fruit." --guard stop

``detect`` prints the score, the decision and the prompt with its suspicious span highlighted
(exit status 0 either way; ``--tokens`` adds a per-token table of the CUSUM's input and value).
The detector is ``--detector FILE`` (written by ``Detector.save`` or ``detect-eval
--save-detector``); by default the one fitted for SmolLM2 that ships with the package, and for
another model one fitted on the bundled benign prompts on the spot (about a minute).

``generate --guard POLICY`` runs :func:`logit_processors.guard.guarded_generate`: the prompt
is scored from the same forward pass that starts generation, and the policy (record, warn, stop,
raise) decides what a flagged prompt gets. The guard's report goes to stderr; under ``raise``
a flagged prompt ends the command with exit status 3.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

from .guard import POLICIES

EXIT_GUARD_TRIGGERED = 3


def add_commands(commands, model_options: argparse.ArgumentParser) -> None:
    """Register ``detect`` and ``detect-eval`` on the ``logit-processors`` subcommand parser."""
    detect = commands.add_parser(
        "detect", parents=[model_options], help="score a prompt for adversarial manipulation (logit-gap CUSUM)",
        description="Score PROMPT (a user message; the chat template is applied) with a fitted Detector: "
                    "per-token gap statistics standardized against benign prompts, a one-sided CUSUM, and a "
                    "threshold at 1%% false-positive rate. Prints the score, the decision and the suspicious span.",
    )
    detect.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads it from stdin)")
    detect.add_argument("--detector", type=Path, metavar="FILE",
                        help="a saved detector (default: the one shipped for smollm2; other models: fitted now)")
    detect.add_argument("--tokens", action="store_true", help="also print a per-token table (score x_t, CUSUM)")
    detect.add_argument("--html", type=Path, metavar="FILE", help="write an HTML page: token heatmap, span, CUSUM")
    detect.set_defaults(run=run_detect)

    evaluate = commands.add_parser(
        "detect-eval", parents=[model_options], help="evaluate attack detection against perplexity baselines",
        description="Fit the detector and the whole-prompt and windowed perplexity filters on the bundled benign fit "
                    "prompts (1%% FPR), then report AUROC, TPR@1%%FPR, FPR at the fitted threshold and span "
                    "localization on held-out benign prompts and three attack sets (random-token suffixes, "
                    "optimized suffixes, fluent appended instructions), in one table.",
    )
    evaluate.add_argument("--limit", type=int, default=None, metavar="N",
                          help="use only the first N prompts of each set (a quick run; raise --fpr to match)")
    evaluate.add_argument("--fpr", type=float, default=0.01, metavar="RATE",
                          help="target false-positive rate of every method (default: 0.01)")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="write rows, targets and every score as JSON")
    evaluate.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    evaluate.add_argument("--save-detector", type=Path, metavar="FILE", help="save the fitted detector")
    evaluate.set_defaults(run=run_detect_eval)


def add_guard_options(generate: argparse.ArgumentParser) -> None:
    """``--guard POLICY`` and ``--detector FILE`` for ``generate``."""
    generate.add_argument("--guard", choices=POLICIES, default=None, metavar="POLICY",
                          help=f"score the prompt in the same forward pass and apply a policy to a flagged one: "
                               f"{', '.join(POLICIES)} (record: report only; stop: end the reply at once)")
    generate.add_argument("--detector", type=Path, metavar="FILE", help="the detector for --guard (see detect)")


# --------------------------------------------------------------------------------------------
# Shared


def load_detector(args, loaded):
    """``--detector FILE``, the shipped detector of a named model, or one fitted now."""
    from .cli import PROG, CommandError, _one_line
    from .detection import Detector
    from .detection_data import DETECTOR_FILES, default_detector, load_benign

    try:
        if getattr(args, "detector", None) is not None:
            return Detector.load(args.detector, loaded.model, loaded.tokenizer)
        name = args.model.strip().lower()
        if name in DETECTOR_FILES:
            return default_detector(loaded.model, loaded.tokenizer, name)
    except (OSError, ValueError, KeyError) as error:
        raise CommandError(f"{PROG}: error: --detector: {_one_line(error)}") from error
    print(f"{PROG}: note: no detector ships for {args.model!r}; fitting one on the bundled benign prompts "
          "(save one with 'detect-eval --save-detector FILE' and pass --detector next time)", file=sys.stderr)
    return Detector.fit(loaded.model, loaded.tokenizer, [p.text for p in load_benign("fit")])


def _check_parent(path: Path | None, flag: str) -> None:
    from .cli import PROG, CommandError

    if path is not None and not path.expanduser().resolve().parent.is_dir():
        raise CommandError(f"{PROG}: error: argument {flag}: directory {str(path.parent)!r} does not exist")


# --------------------------------------------------------------------------------------------
# detect


def run_detect(args) -> int:
    from .cli import PROG, CommandError, _console, _load, _one_line, _read_text

    _check_parent(args.html, "--html")
    loaded = _load(args)
    detector = load_detector(args, loaded)
    prompt = _read_text(args.prompt)
    try:
        result = detector.score(prompt)
    except ValueError as error:  # empty prompt, prompt longer than the context
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error
    console = _console()
    console.print(verdict_text(result))
    console.print(highlighted_prompt(result, loaded.tokenizer))
    if args.tokens:
        console.print(token_table(result, loaded.tokenizer))
    if args.html:
        Path(args.html).expanduser().write_text(detection_html(result, loaded.tokenizer, title=f"{PROG} detect"),
                                                encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def verdict_text(result):
    from rich.text import Text

    text = Text()
    text.append("FLAGGED" if result.flagged else "not flagged", style="bold red" if result.flagged else "bold green")
    text.append(f"  score {result.score:.2f}  threshold {result.threshold:.2f}")
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

    from .report import visible_token

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
    from .report import trace_html

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


# --------------------------------------------------------------------------------------------
# detect-eval


def run_detect_eval(args) -> int:
    from .cli import PROG, CommandError, _console, _load, _one_line
    from .detection_eval import evaluate

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"{PROG}: error: argument --limit: expected a positive integer; got {args.limit}")
    for flag in ("json", "save_detector"):
        _check_parent(getattr(args, flag), "--" + flag.replace("_", "-"))
    loaded = _load(args)
    try:
        report, detector = evaluate(loaded.model, loaded.tokenizer, limit=args.limit, fpr=args.fpr,
                                    model_name=args.model, log=lambda line: print(line, file=sys.stderr))
    except ValueError as error:  # e.g. too few fit prompts for the FPR
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error
    console = _console()
    console.print(report.table())
    console.print("Targets (issue 6):")
    for t in report.targets:
        console.print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: measured {t['measured']:.3f}")
    console.print(f"({report.meta['seconds']:.0f} s; detector {report.meta['detector']})")
    if args.markdown:
        print(report.markdown())
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.save_detector:
        detector.save(Path(args.save_detector).expanduser())
        print(f"wrote {args.save_detector}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------
# generate --guard


def run_guarded_generate(args, loaded, prompt: str) -> int:
    """``generate --guard POLICY``: the cli's processors and sampling settings, through the guard."""
    from transformers import set_seed

    from .cli import PROG, CommandError, _emit, _one_line, build_processors, neutral_sampling_settings
    from .guard import GuardTriggered, guarded_generate

    if not args.chat_template:
        raise CommandError(f"{PROG}: error: --guard scores the prompt as a chat request; drop --no-chat-template")
    detector = load_detector(args, loaded)
    processors = build_processors(args, loaded.tokenizer, loaded.vocab_size)
    if args.seed is not None:
        set_seed(args.seed)
    try:
        out = guarded_generate(loaded.model, loaded.tokenizer, prompt, detector=detector, policy=args.guard,
                               max_new_tokens=args.max_new_tokens, logits_processor=processors,
                               do_sample=not args.greedy, **neutral_sampling_settings())
    except GuardTriggered as error:
        print(f"{PROG}: guard: {error}", file=sys.stderr)
        return EXIT_GUARD_TRIGGERED
    except ValueError as error:
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error
    print(out.text)
    print(f"{PROG}: guard: {out.report.summary()}", file=sys.stderr)
    if args.gaps or args.html or args.png or args.json:
        trace = out.report.trace(out.output)
        _emit(args, trace, prompt_lengths=None, table=args.gaps)
    return 0
