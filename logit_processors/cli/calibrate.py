"""The calibration commands of ``logit-processors``: ``calibrate`` and ``generate --calibration``.

::

    logit-processors calibrate --model smollm2 --texts train.txt --out calib.json
    logit-processors calibrate --texts train.txt --out calib.json --heldout test.txt --png reliability.png
    logit-processors generate "Once upon a time" --calibration calib.json

``calibrate`` fits the NLL-minimizing temperature of ``--model`` on the text of ``--texts``
(teacher-forced, every position; Guo et al., 2017) with
:meth:`logit_processors.CalibratedTemperature.fit` and saves it to ``--out``
(JSON: the temperature, the fit statistics, the model's identity). The file is read as one text
(``-`` reads stdin) and cut into windows of ``--max-length`` tokens. ``--heldout FILE`` prints
NLL, ECE (15 equal-width and equal-mass bins), top-label Brier and accuracy on that text before
and after calibration; ``--png`` draws the reliability diagrams, on the held-out text if given,
else on the calibration text itself (in-sample, said in the title).

``generate --calibration FILE`` divides the model's logits by the fitted temperature before any
other processor (it is a property of the model: ``--temperature T`` then samples at ``T``
relative to the calibrated distribution). A calibration fitted on another model is refused with
one line naming what differs, exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..calibration import CalibratedTemperature, report
from ..runtime.streamed_logits import DEFAULT_MAX_LENGTH
from .common import (
    check_outputs,
    check_parent,
    fail,
    load_model,
    one_line,
    output_path,
    positive_int_arg,
    read_text_file,
    wrote,
)


def add_commands(commands, model_options: argparse.ArgumentParser) -> None:
    """Register ``calibrate`` on the ``logit-processors`` subcommand parser."""
    calibrate = commands.add_parser(
        "calibrate", parents=[model_options], help="fit a calibrated temperature on a text (temperature scaling)",
        description="Fit the temperature that minimizes the next-token NLL of --model on the text of --texts "
                    "(teacher-forced, every position; Guo et al., 2017), save it as JSON, and report calibration "
                    "metrics before and after on --heldout. Apply it with 'generate --calibration FILE'.",
    )
    calibrate.add_argument("--texts", required=True, metavar="FILE",
                           help="the calibration text: a UTF-8 text file, read as one text ('-' reads stdin)")
    calibrate.add_argument("--out", required=True, type=output_path, metavar="FILE",
                           help="where to write the calibration (JSON)")
    calibrate.add_argument("--heldout", metavar="FILE",
                           help="a held-out text: print NLL, ECE, Brier and accuracy on it before and after")
    calibrate.add_argument("--png", type=output_path, metavar="FILE",
                           help="reliability diagrams before and after (on --heldout if given; needs matplotlib)")
    calibrate.add_argument("--max-length", type=positive_int_arg, default=DEFAULT_MAX_LENGTH, metavar="N",
                           help=f"tokens per window; longer text is cut into windows (default: {DEFAULT_MAX_LENGTH})")
    calibrate.add_argument("--batch-size", type=positive_int_arg, default=8, metavar="N",
                           help="windows per forward pass (default: 8)")
    calibrate.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    calibrate.set_defaults(run=run_calibrate)


def add_options(generate: argparse.ArgumentParser) -> None:
    """``--calibration FILE`` for ``generate``."""
    generate.add_argument("--calibration", type=Path, metavar="FILE", default=None,
                          help="divide the logits by the temperature fitted by 'calibrate' (applied first; refused "
                               "if it was fitted on another model)")


# --------------------------------------------------------------------------------------------
# generate --calibration


def check_flags(args: argparse.Namespace) -> None:
    """Read ``--calibration`` before the model loads, so that a bad file fails at once."""
    path = getattr(args, "calibration", None)
    args.calibration_processor = None
    if path is None:
        return
    try:
        args.calibration_processor = CalibratedTemperature.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise fail(f"argument --calibration: {one_line(error)}") from error


def check_model(args: argparse.Namespace, loaded) -> None:
    """Refuse a ``--calibration`` fitted on a model other than the one loaded (one line, exit 2)."""
    calibration = getattr(args, "calibration_processor", None)
    if calibration is None:
        return
    try:
        calibration.check_model(loaded.model, loaded.tokenizer)
    except ValueError as error:
        raise fail(f"argument --calibration: {one_line(error)}") from error


def processors(args: argparse.Namespace) -> list:
    """``[CalibratedTemperature]`` when ``--calibration`` was given (read by :func:`check_flags`), else ``[]``."""
    calibration = getattr(args, "calibration_processor", None)
    return [] if calibration is None else [calibration]


# --------------------------------------------------------------------------------------------
# calibrate


def run_calibrate(args: argparse.Namespace) -> int:
    if args.texts == "-" and args.heldout == "-":
        raise fail("--texts and --heldout cannot both read stdin")
    check_outputs(args)  # --png's directory and matplotlib, before any work
    check_parent(args.out, "--out")
    texts = read_text_file(args.texts, "--texts")
    heldout = read_text_file(args.heldout, "--heldout") if args.heldout is not None else None
    loaded = load_model(args)
    options = {"max_length": args.max_length, "batch_size": args.batch_size}
    try:
        calibration = CalibratedTemperature.fit(loaded.model, loaded.tokenizer, [texts], progress=args.progress,
                                                **options)
    except ValueError as error:  # no text to score, a degenerate model
        raise fail(f"argument --texts: {one_line(error)}") from error
    stats = calibration.fit_stats
    print(f"calibrated temperature T = {calibration.temperature:.4f}  (fitted on {stats['positions']:,} positions "
          f"of {args.texts}: NLL {stats['nll_uncalibrated']:.4f} at T = 1, {stats['nll']:.4f} at T)")
    try:
        calibration.save(args.out)
    except OSError as error:
        raise fail(f"argument --out: {one_line(error)}") from error
    wrote(args.out)
    if heldout is None and args.png is None:
        return 0
    try:
        result = report(loaded.model, loaded.tokenizer, [heldout if heldout is not None else texts], calibration,
                        progress=args.progress, **options)
    except ValueError as error:
        raise fail(f"argument --heldout: {one_line(error)}") from error
    if heldout is not None:
        print(result)
    if args.png is not None:
        where = f"held-out {args.heldout}" if heldout is not None else f"{args.texts} (in-sample: the calibration text)"
        try:
            result.plot(args.png, title=f"{args.model}: {where}")
        except OSError as error:
            raise fail(f"argument --png: {one_line(error)}") from error
        wrote(args.png)
    return 0
