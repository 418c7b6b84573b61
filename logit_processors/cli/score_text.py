"""``logit-processors score-text``: bits per byte of models and their ensemble on a text, across tokenizers.

::

    logit-processors score-text heldout.txt --model smollm2 --ensemble gemma3-270m --fit fit.txt --json
    logit-processors score-text heldout.txt --model smollm2 --ensemble gemma3-270m:0.6 --primary-weight 0.4
    logit-processors score-text heldout.txt --model smollm2 --ensemble gemma3-270m --fit fit.txt --calibrate \\
        --combine logprob --generation
    logit-processors score-text heldout.txt --model smollm2 --ensemble gemma3-270m --fit fit.txt --adaptive --json

Prints one JSON object (``--json``) or a short table: ``{"bytes": N, "members": {"smollm2": bpb,
"gemma3-270m": bpb}, "ensemble": bpb, "weights": [...], ...}``, bits per byte on FILE. The models
may have different tokenizers (they are compared on bytes). Weights come from ``--ensemble
NAME[:W]`` and ``--primary-weight`` (given), or are fitted on ``--fit FIT_FILE`` (never on FILE);
``--calibrate`` first fits each model's temperature on FIT_FILE
(:class:`~logit_processors.calibration.CalibratedTemperature`); ``--adaptive`` adds ``"adaptive"``: the
mixture whose weights learn online (:mod:`logit_processors.ensemble.adaptive`). A file holding the ASCII record
separator (``\\x1e``) on a line of its own is several documents, each scored from its start token.
What is exact and what is approximated: :mod:`logit_processors.ensemble.score_text`.
"""

from __future__ import annotations

import argparse
import json
import math

from ..calibration import CalibratedTemperature
from ..ensemble.score_text import score_text
from ..models import ModelLoadError, load
from .common import fail, load_model, one_line, read_text_file
from .ensemble import parse_member

RECORD_SEPARATOR = "\n\x1e\n"


def add_commands(commands, model_options: argparse.ArgumentParser) -> None:
    """Register ``score-text`` on the ``logit-processors`` subcommand parser."""
    command = commands.add_parser(
        "score-text", parents=[model_options], help="bits per byte of models and their ensemble, across tokenizers",
        description="Score FILE with --model and each --ensemble member on bytes (the unit every tokenizer shares) "
                    "and with their ensemble; print bits per byte. Weights are given, or fitted on --fit FIT_FILE.",
    )
    command.add_argument("file", metavar="FILE", help="the text to score (UTF-8; '-' reads stdin)")
    command.add_argument("--ensemble", action="append", type=parse_member, default=[], required=True,
                         metavar="NAME_OR_PATH[:WEIGHT]", help="a member model (repeatable), with its own tokenizer")
    command.add_argument("--primary-weight", type=float, default=None, metavar="W",
                         help="weight of --model when the weights are given (default 1)")
    command.add_argument("--fit", metavar="FIT_FILE", default=None,
                         help="fit the weights (and, with --calibrate, temperatures) on this text instead")
    command.add_argument("--combine", choices=("mixture", "logprob", "logodds"), default="mixture",
                         help="linear mixture over byte spans (exact; default), or a product of experts scored on "
                              "--model's vocabulary as the ensemble generates")
    command.add_argument("--calibrate", action="store_true", help="fit each model's temperature on FIT_FILE first")
    command.add_argument("--generation", action="store_true",
                         help="also score the mixture the ensemble generates from (on --model's tokens)")
    command.add_argument("--adaptive", action="store_true",
                         help="also score mixture weights learned online from the text scored so far (each document "
                              "from a prior fitted on --fit, or centred on the given weights)")
    command.add_argument("--json", action="store_true", help="print one JSON object")
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.adaptive and args.combine != "mixture":
        raise fail("argument --adaptive: adaptive weights are mixture weights; use --combine mixture, "
                   f"not {args.combine}")
    if args.calibrate and args.fit is None:
        raise fail("argument --calibrate: needs --fit FIT_FILE (temperatures are never fitted on the scored text)")
    weights = None
    if args.fit is None:
        weights = [1.0 if args.primary_weight is None else args.primary_weight, *(w for _, w in args.ensemble)]
    elif args.primary_weight is not None:
        raise fail("argument --primary-weight: the weights are fitted on --fit; give either")
    texts = documents(read_text_file(args.file, "FILE"))
    fit_texts = documents(read_text_file(args.fit, "--fit")) if args.fit else None
    primary = load_model(args)
    models, tokenizers, names = [primary.model], [primary.tokenizer], [args.model]
    for name, _ in args.ensemble:
        try:
            model, tokenizer = load(name, dtype=args.dtype, device=args.device, progress=False)
        except (ModelLoadError, ValueError, OSError) as error:
            raise fail(f"argument --ensemble: {one_line(error)}") from error
        models.append(model)
        tokenizers.append(tokenizer)
        names.append(name)
    temperatures = None
    if args.calibrate:
        temperatures = [CalibratedTemperature.fit(m, t, fit_texts, progress=False)
                        for m, t in zip(models, tokenizers, strict=True)]
    try:
        result = score_text(models, tokenizers, texts, fit_texts=fit_texts, weights=weights, combine=args.combine,
                            temperatures=temperatures, generation=args.generation, names=names,
                            adaptive=args.adaptive)
    except ValueError as error:
        raise fail(one_line(error)) from error
    print(json.dumps(result) if args.json else table(result))
    return 0


def documents(text: str) -> list[str]:
    """A file's documents: split at lines holding only the ASCII record separator."""
    return [d for d in text.split(RECORD_SEPARATOR) if d.strip()]


def table(result: dict) -> str:
    best = min(result["members"].values())
    lines = [f"{result['bytes']} bytes; bits per byte (lower is better):"]
    lines += [f"  {name:24s} {bits:.4f}" for name, bits in result["members"].items()]
    gain = 1 - result["ensemble"] / best if best > 0 and math.isfinite(result["ensemble"]) else float("nan")
    lines.append(f"  {'ensemble (' + result['combine'] + ')':24s} {result['ensemble']:.4f}  "
                 f"({gain:+.1%} vs the better member; weights {[round(w, 3) for w in result['weights']]})")
    if "adaptive" in result:
        adaptive = result["adaptive"]
        lines.append(f"  {'adaptive mixture':24s} {adaptive['ensemble']:.4f}  ({1 - adaptive['ensemble'] / best:+.1%}; "
                     f"final weights {[round(w, 3) for w in adaptive['final_weights'][-1]]})")
    if "generation" in result:
        lines.append(f"  {'generation mode':24s} {result['generation']['ensemble']:.4f}")
        if "adaptive" in result["generation"]:
            lines.append(f"  {'generation, adaptive':24s} {result['generation']['adaptive']['ensemble']:.4f}")
    return "\n".join(lines)
