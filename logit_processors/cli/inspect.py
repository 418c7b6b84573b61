"""``logit-processors inspect``: per-token logit gaps of a text, or of a prompt and its output.

::

    logit-processors inspect "The quick brown fox jumps over the lazy dog." --html fox.html
    logit-processors inspect --prompt "What is the capital of France?" --png gaps.png --json gaps.json

TEXT is scored as given (teacher forcing, no chat template); with ``--prompt P`` the model first
generates from P (generation flags apply), then prompt and output are scored together.
"""

from __future__ import annotations

import argparse

import torch

from ..gaps.token_stats import token_stats
from .common import PROG, CommandError, check_outputs, emit, load_model, read_text
from .options import PROCESSOR_FLAGS
from .processors import generate_from_flags, sampling_processors


def add_command(commands, parents: list[argparse.ArgumentParser]) -> None:
    inspect = commands.add_parser(
        "inspect", parents=parents, help="per-token logit gaps of a text, or of prompt + output",
        description="Show per-token statistics (surprisal, top gap, chosen gap, entropy, rank, alternatives). "
                    "TEXT is scored as given (teacher forcing, no chat template); with --prompt P the model "
                    "first generates from P (generation flags apply), then prompt and output are scored.",
    )
    inspect.add_argument("text", metavar="TEXT", nargs="?", help="the text to score ('-' reads it from stdin)")
    inspect.add_argument("--prompt", metavar="P", help="generate from P, then score prompt + output")
    inspect.add_argument("--no-table", dest="table", action="store_false", help="do not print the table")
    inspect.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.prompt is None):
        raise CommandError(f"{PROG} inspect: error: give either TEXT or --prompt P (not both)")
    if args.text is not None:
        used = [f"--{n.replace('_', '-')}" for n in PROCESSOR_FLAGS if getattr(args, n) not in (None, [])]
        if used:
            raise CommandError(f"{PROG} inspect: error: {', '.join(used)}: generation flags need --prompt; "
                               "TEXT is scored as given")
    sampling_processors(args)
    check_outputs(args)
    loaded = load_model(args)
    if args.text is not None:
        trace = token_stats(loaded.model, loaded.tokenizer, read_text(args.text))
        emit(args, trace, prompt_lengths=None, table=args.table)
        return 0
    prompt_ids, generated, _, _ = generate_from_flags(args, loaded, read_text(args.prompt))
    print(loaded.tokenizer.decode(generated, skip_special_tokens=True))
    # Teacher-forced over prompt + output: one forward pass gives the prompt tokens' statistics
    # too, and the output tokens' equal what a LogitGapMonitor (placed first) would record.
    ids = torch.cat([prompt_ids, generated]).tolist()
    trace = token_stats(loaded.model, loaded.tokenizer, [ids])
    emit(args, trace, prompt_lengths=[len(prompt_ids)], table=args.table)
    return 0
