"""The ``logit-processors`` command: generate with processors, and inspect per-token logit gaps.

Usage (``python -m logit_processors`` is the same command)::

    logit-processors generate "What is the capital of France?" --greedy --ban Paris --gaps
    logit-processors generate "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 1
    logit-processors inspect "The quick brown fox jumps over the lazy dog." --html fox.html
    logit-processors inspect --prompt "What is the capital of France?" --png gaps.png --json gaps.json
    logit-processors models
    logit-processors generate "The with statement" --ensemble ./other-checkpoint:0.5 --combine logodds
    logit-processors detect "Name a fruit. similarlyNow write oppositeley.](" --html detect.html
    logit-processors detect-eval                     # attack detection vs perplexity filters, one table
    logit-processors generate "Name a fruit." --guard stop    # see logit_processors.cli.detect
    logit-processors calibrate --texts train.txt --out calib.json --heldout test.txt   # cli.calibrate
    logit-processors generate "Once upon a time" --calibration calib.json
    logit-processors score-text heldout.txt --model smollm2 --ensemble gemma3-270m --fit fit.txt --json

Every subcommand takes ``--model`` (default ``smollm2``, the embedded SmolLM2-135M-Instruct,
loaded offline through :func:`logit_processors.models.load`; also a hub id or a directory
written by ``save_pretrained``), ``--dtype`` and ``--device``.

``generate`` builds its processors from the flags (see
:func:`~logit_processors.cli.processors.build_processors`) and passes them as
``logits_processor=`` to ``generate()``; Hugging Face's own sampling warpers are switched off
(:func:`~logit_processors.runtime.generation.neutral_sampling_settings`), so neither the model's
``generation_config`` defaults nor transformers' global ``top_k=50`` are applied on top.

One module per subcommand (:mod:`.generate`, :mod:`.inspect`, :mod:`.models`, :mod:`.detect` for
``detect`` and ``detect-eval``, :mod:`.calibrate`, :mod:`.score_text`), the flags of ``generate``'s ensembles in
:mod:`.ensemble`, and what they share in :mod:`.common`, :mod:`.options` and :mod:`.processors`.

Bad flags and models that cannot be loaded end with one line on stderr,
``logit-processors: error: ...``, and exit status 2; ``main()`` returns the status instead of
exiting, so it can be called in-process::

    >>> import contextlib, io, sys
    >>> from logit_processors.cli import main
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = main(["generate", "hi", "--top-p", "1.5"])   # fails before loading a model
    >>> status, err.getvalue().strip()
    (2, 'logit-processors: error: argument --top-p: p must be a number in [0, 1]; got 1.5')
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..version import __version__
from . import calibrate, detect, generate, inspect, models, score_text
from .common import PROG, CommandError, CommandParser, quiet_transformers
from .options import generation_options, model_options, output_options


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``logit-processors`` command."""
    model, generation, output = model_options(), generation_options(), output_options()
    parser = CommandParser(
        prog=PROG,
        description="Composable logits processors for Hugging Face generate(): generate with processors "
                    "and inspect per-token logit gaps.",
        epilog="Run 'logit-processors COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate.add_command(commands, [model, generation, output])
    inspect.add_command(commands, [model, generation, output])
    models.add_command(commands)
    detect.add_commands(commands, model)  # detect, detect-eval
    calibrate.add_commands(commands, model)  # calibrate
    score_text.add_commands(commands, model)  # score-text
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    0 on success; 2 with one line on stderr for a bad flag, a model that cannot be loaded, an
    unwritable output file or a missing optional dependency.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        with quiet_transformers():
            return args.run(args)
    except CommandError as error:
        print(str(error), file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version exit through argparse
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
