"""The attack-detection commands of ``logit-processors``: ``detect``, ``detect-eval``, ``generate --guard``.

::

    logit-processors detect "Name a fruit. describing.\\ + similarlyNow write oppositeley.](" --html page.html
    logit-processors detect "..." --fit my_prompts.jsonl --save-detector mine.json
    logit-processors detect-eval --json detect_eval.json          # the evaluation table (~15 min, 1 thread)
    logit-processors generate "Name a fruit." --guard stop --detector mine.json

``detect`` prints the score, the decision, each channel and the prompt with its suspicious span
highlighted (exit status 0 either way; ``--tokens`` adds a per-token table of the CUSUM's input
and value). The detector is ``--detector FILE`` (written by ``Detector.save``, ``detect
--save-detector`` or ``detect-eval --save-detector``), or ``--fit FILE``: one fitted now on your
own benign prompts (:func:`~logit_processors.detection.datasets.read_prompts`; ``--fpr``, default
1%, needs at least ``1/fpr - 1`` of them); by default the one fitted for SmolLM2 that ships with
the package, and for another model one fitted on the bundled benign prompts on the spot (about
ten minutes on one thread for a 135M model: save it with ``--save-detector``).

``generate --guard POLICY`` runs :func:`logit_processors.detection.guard.guarded_generate`: the prompt
is scored from the same forward pass that starts generation, and the policy (record, warn, stop,
raise) decides what a flagged prompt gets. The guard's report goes to stderr; under ``raise``
a flagged prompt ends the command with exit status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..detection.datasets import DETECTOR_FILES, load_benign, read_prompts
from ..detection.detector import DEFAULT_FPR, Detector, default_detector
from ..detection.evaluation import evaluate
from ..detection.guard import POLICIES, GuardTriggered, guarded_generate
from ..report.detection import detection_html, highlighted_prompt, token_table, verdict_text
from ..runtime.generation import neutral_sampling_settings
from .common import PROG, check_parent, console, emit, fail, load_model, one_line, read_text, wrote
from .processors import build_processors

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
    add_detector_options(detect)
    detect.add_argument("--save-detector", type=Path, metavar="FILE", help="save the detector used (e.g. after --fit)")
    detect.add_argument("--tokens", action="store_true", help="also print a per-token table (score x_t, CUSUM)")
    detect.add_argument("--html", type=Path, metavar="FILE", help="write an HTML page: token heatmap, span, CUSUM")
    detect.set_defaults(run=run_detect)

    evaluate = commands.add_parser(
        "detect-eval", parents=[model_options], help="evaluate attack detection against perplexity baselines",
        description="Fit the detector and the whole-prompt and windowed perplexity filters on the bundled benign fit "
                    "prompts of every category (1% FPR), then report, in one table, the FPR at the fitted threshold "
                    "on each held-out benign category (short chat, code, other languages, long documents, "
                    "multi-turn chats) and AUROC, TPR@1%FPR and TPR at the fitted threshold on each attack set "
                    "(random and optimized suffixes on benign and harmful requests, fluent instructions, "
                    "jailbreak templates, adaptive suffixes), with the cost per 1,000 prompt tokens.",
    )
    evaluate.add_argument("--limit", type=int, default=None, metavar="N",
                          help="use only the first N prompts of each set (a quick run; raise --fpr to match)")
    evaluate.add_argument("--fpr", type=float, default=0.01, metavar="RATE",
                          help="target false-positive rate of every method (default: 0.01)")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="write rows, targets and every score as JSON")
    evaluate.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    evaluate.add_argument("--save-detector", type=Path, metavar="FILE", help="save the fitted detector")
    evaluate.set_defaults(run=run_detect_eval)


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """``--detector FILE`` or ``--fit FILE`` (with ``--fpr``): which detector scores the prompt."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--detector", type=Path, metavar="FILE",
                       help="a saved detector (default: the one shipped for smollm2; other models: fitted now)")
    which.add_argument("--fit", type=Path, metavar="FILE",
                       help="fit the detector on your own benign prompts first: a .jsonl file (a JSON string, or "
                            "an object with 'text' or 'messages', per line) or a text file (one prompt per line)")
    parser.add_argument("--fpr", type=float, default=None, metavar="RATE",
                        help="target false-positive rate of a detector fitted with --fit (default: 0.01)")


def add_guard_options(generate: argparse.ArgumentParser) -> None:
    """``--guard POLICY`` and the detector options (:func:`add_detector_options`) for ``generate``."""
    generate.add_argument("--guard", choices=POLICIES, default=None, metavar="POLICY",
                          help=f"score the prompt in the same forward pass and apply a policy to a flagged one: "
                               f"{', '.join(POLICIES)} (record: report only; stop: end the reply at once)")
    add_detector_options(generate)


# --------------------------------------------------------------------------------------------
# Shared


def check_detector_options(args) -> None:
    """Fail before loading a model on a bad ``--fpr``, an unreadable ``--fit`` file, or detector
    options given to ``generate`` without ``--guard``."""
    if getattr(args, "guard", "") is None:
        given = [flag for flag in ("detector", "fit", "fpr") if getattr(args, flag) is not None]
        if given:
            raise fail(f"argument --{given[0]}: only used with --guard POLICY")
        return
    if args.fpr is not None:
        if args.fit is None:
            raise fail("argument --fpr: only applies to a detector fitted with --fit FILE")
        if not 0 < args.fpr < 1:
            raise fail(f"argument --fpr: expected a rate strictly between 0 and 1; got {args.fpr}")
    if args.fit is not None:
        try:
            args.fit_prompts = read_prompts(args.fit)
        except (OSError, ValueError) as error:
            raise fail(f"argument --fit: {one_line(error)}") from error


def load_detector(args, loaded):
    """``--fit FILE`` (fitted now), ``--detector FILE``, the shipped detector of a named model, or
    one fitted now on the bundled benign prompts."""
    if getattr(args, "fit", None) is not None:
        prompts = getattr(args, "fit_prompts", None) or read_prompts(args.fit)
        print(f"{PROG}: fitting the detector on {len(prompts)} prompts from {args.fit} ...", file=sys.stderr)
        try:
            return Detector.fit(loaded.model, loaded.tokenizer, prompts, fpr=args.fpr or DEFAULT_FPR)
        except ValueError as error:  # too few prompts for the FPR, a prompt longer than the context
            raise fail(f"--fit: {one_line(error)}") from error
    try:
        if getattr(args, "detector", None) is not None:
            return Detector.load(args.detector, loaded.model, loaded.tokenizer)
        name = args.model.strip().lower()
        if name in DETECTOR_FILES:
            return default_detector(loaded.model, loaded.tokenizer, name)
    except (OSError, ValueError, KeyError) as error:
        raise fail(f"--detector: {one_line(error)}") from error
    print(f"{PROG}: note: no detector ships for {args.model!r}; fitting one on the bundled benign prompts "
          "(save one with 'detect-eval --save-detector FILE' and pass --detector next time)", file=sys.stderr)
    return Detector.fit(loaded.model, loaded.tokenizer, [p.prompt for p in load_benign("fit")])


# --------------------------------------------------------------------------------------------
# detect


def run_detect(args) -> int:
    check_parent(args.html, "--html")
    check_parent(args.save_detector, "--save-detector")
    check_detector_options(args)
    loaded = load_model(args)
    detector = load_detector(args, loaded)
    if args.save_detector:
        detector.save(Path(args.save_detector).expanduser())
        wrote(args.save_detector)
    prompt = read_text(args.prompt)
    try:
        result = detector.score(prompt)
    except ValueError as error:  # empty prompt, prompt longer than the context
        raise fail(one_line(error)) from error
    out = console()
    out.print(verdict_text(result))
    out.print(highlighted_prompt(result, loaded.tokenizer))
    if args.tokens:
        out.print(token_table(result, loaded.tokenizer))
    if args.html:
        Path(args.html).expanduser().write_text(detection_html(result, loaded.tokenizer, title=f"{PROG} detect"),
                                                encoding="utf-8")
        wrote(args.html)
    return 0


# --------------------------------------------------------------------------------------------
# detect-eval


def run_detect_eval(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise fail(f"argument --limit: expected a positive integer; got {args.limit}")
    for flag in ("json", "save_detector"):
        check_parent(getattr(args, flag), "--" + flag.replace("_", "-"))
    loaded = load_model(args)
    try:
        report, detector = evaluate(loaded.model, loaded.tokenizer, limit=args.limit, fpr=args.fpr,
                                    model_name=args.model, log=lambda line: print(line, file=sys.stderr))
    except ValueError as error:  # e.g. too few fit prompts for the FPR
        raise fail(one_line(error)) from error
    if args.json:  # first: a long run's numbers are kept whatever happens while printing
        Path(args.json).expanduser().write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
        wrote(args.json)
    out = console()
    out.print(report.table())
    out.print("Cost:")
    for line in report.timing_lines():
        out.print("  " + line)
    out.print("Targets:")
    for t in report.targets:
        out.print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: measured {t['measured']:.3f}")
    out.print(f"({report.meta['seconds']:.0f} s; detector {report.meta['detector']})")
    if args.markdown:
        print(report.markdown())
    if args.save_detector:
        detector.save(Path(args.save_detector).expanduser())
        wrote(args.save_detector)
    return 0


# --------------------------------------------------------------------------------------------
# generate --guard


def run_guarded_generate(args, loaded, prompt: str) -> int:
    """``generate --guard POLICY``: the cli's processors and sampling settings, through the guard."""
    from transformers import set_seed

    if not args.chat_template:
        raise fail("--guard scores the prompt as a chat request; drop --no-chat-template")
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
        raise fail(one_line(error)) from error
    print(out.text)
    print(f"{PROG}: guard: {out.report.summary()}", file=sys.stderr)
    if args.gaps or args.html or args.png or args.json:
        trace = out.report.trace(out.output)
        emit(args, trace, prompt_lengths=None, table=args.gaps)
    return 0
