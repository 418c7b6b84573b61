"""``logit-processors generate``: generate a continuation with processors built from flags.

::

    logit-processors generate "What is the capital of France?" --greedy --ban Paris --gaps
    logit-processors generate "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 1

With ``--gaps`` (or ``--html``/``--png``/``--json``) a
:class:`~logit_processors.LogitGapMonitor`, placed first, records the generated tokens'
statistics of the model's own distribution (before the processors). ``--ensemble``,
``--contrastive`` (:mod:`.ensemble`), ``--calibration`` (:mod:`.calibrate`) and ``--guard``
(:mod:`.detect`) add their own flags.
"""

from __future__ import annotations

import argparse

from ..gaps.monitor import LogitGapMonitor
from . import calibrate, detect, ensemble
from .common import check_outputs, emit, load_model, read_text
from .processors import generate_from_flags, note_greedy, sampling_processors


def add_command(commands, parents: list[argparse.ArgumentParser]) -> None:
    generate = commands.add_parser(
        "generate", parents=parents, help="generate text with processors built from flags",
        description="Generate a continuation of PROMPT with the processors given as flags and print it. "
                    "With --gaps (or --html/--png/--json) the generated tokens' statistics are recorded by a "
                    "LogitGapMonitor that sees the model's own distribution (before the processors).",
    )
    generate.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads it from stdin)")
    generate.add_argument("--gaps", action="store_true", help="also print the per-token gap table")
    detect.add_guard_options(generate)
    ensemble.add_options(generate)  # --ensemble, --contrastive
    calibrate.add_options(generate)  # --calibration
    generate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sampling_processors(args)  # bad values fail before the model loads
    ensemble.check_flags(args)
    calibrate.check_flags(args)  # reads --calibration FILE
    detect.check_detector_options(args)  # reads --fit FILE
    check_outputs(args)
    note_greedy(args)
    loaded = load_model(args)
    calibrate.check_model(args, loaded)  # refuses a calibration of another model
    if args.guard is not None:  # scoring shares the prefill with generation
        return detect.run_guarded_generate(args, loaded, read_text(args.prompt))
    wants_trace = args.gaps or args.html or args.png or args.json
    monitor = LogitGapMonitor(loaded.tokenizer) if wants_trace else None
    _, generated, output, inputs = generate_from_flags(args, loaded, read_text(args.prompt), monitor)
    print(loaded.tokenizer.decode(generated, skip_special_tokens=True))
    if monitor is not None:
        trace = monitor.trace(output, attention_mask=inputs["attention_mask"])
        emit(args, trace, prompt_lengths=None, table=args.gaps)
    return 0
