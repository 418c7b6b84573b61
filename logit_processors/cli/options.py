"""The flag groups several subcommands share: the model, generation (the processors), and the
trace's outputs. Each is a parent parser handed to ``add_parser(parents=[...])``.

Example:
    >>> temperature_range("0.5:1.5")
    (0.5, 1.5)
"""

from __future__ import annotations

import argparse

from ..models import DEFAULT_MODEL
from ..spec import SpecError, check_spec
from .common import output_path, positive_int_arg

DEFAULT_MAX_NEW_TOKENS = 64

#: The processor flags, in the order their processors are applied.
PROCESSOR_FLAGS = ("processors", "deny", "ban", "temperature", "entropy_temperature", "top_k", "top_p", "min_p")


def temperature_range(text: str) -> tuple[float, ...]:
    """``MIN:MAX`` or ``MIN:MAX:EXPONENT`` for --entropy-temperature."""
    parts = text.split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX (e.g. 0.5:1.5) or MIN:MAX:EXPONENT; got {text!r}")
    return values


def spec_file(text: str) -> dict:
    """``--processors FILE.json``: the spec in the file, checked at once (before any model loads);
    its text is bound to the model's tokenizer later."""
    try:
        with open(text, "rb") as f:
            return check_spec(f.read())
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror}") from error
    except SpecError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error}") from error


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME",
        help=f"a named offline model (smollm2, gemma3-270m), a hub id or a local directory (default: {DEFAULT_MODEL})",
    )
    group.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto (default: float32 on CPU)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    return parent


def generation_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "generation",
        "Processors are applied in this order: --processors, --deny, --ban, --temperature, "
        "--entropy-temperature, --top-k, --top-p, --min-p. Nothing else touches the scores: Hugging Face's "
        "own temperature/top-k/top-p warpers are switched off.",
    )
    group.add_argument("--processors", type=spec_file, metavar="FILE.json",
                       help="processors from a spec file (logit_processors.to_spec; the same JSON vLLM takes as "
                            "extra_args['logit_processors']), applied before the processor flags")
    group.add_argument("--max-new-tokens", type=positive_int_arg, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                       help=f"tokens to generate at most (default: {DEFAULT_MAX_NEW_TOKENS})")
    group.add_argument("--greedy", action="store_true",
                       help="take the most likely token after the processors instead of sampling")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: not seeded)")
    group.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                       help="use the prompt as raw text (default: wrap it in the chat template as a user "
                            "message, for models that have one)")
    group.add_argument("--temperature", type=float, metavar="T", help="divide the logits by T > 0")
    group.add_argument("--entropy-temperature", type=temperature_range, metavar="MIN:MAX",
                       help="entropy-based dynamic temperature between MIN and MAX (optionally MIN:MAX:EXPONENT)")
    group.add_argument("--top-k", type=int, metavar="K", help="keep the K most likely tokens")
    group.add_argument("--top-p", type=float, metavar="P", help="nucleus: keep the smallest head of mass >= P")
    group.add_argument("--min-p", type=float, metavar="P", help="keep tokens with p >= P * p(top token)")
    group.add_argument(
        "--deny", action="append", metavar="ITEMS", default=[],
        help="never generate these tokens (repeatable): comma-separated token ids and/or words, e.g. "
             "--deny 13,198 or --deny red,Red. A WORD must be a single token; it denies the tokens spelling "
             "WORD and ' WORD' (use --ban for phrases of several tokens)",
    )
    group.add_argument("--ban", action="append", metavar="PHRASE", default=[],
                       help="never generate PHRASE (repeatable; also its stripped and space-prefixed "
                            "tokenizations, see PhraseBan)")
    return parent


def output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("--color-by", choices=("surprisal", "top_gap", "chosen_gap", "entropy"), default="surprisal",
                       help="statistic that colors the table and the HTML page (default: surprisal)")
    group.add_argument("--max-rows", type=positive_int_arg, default=None, metavar="N",
                       help="show at most N table rows (first and last ones)")
    group.add_argument("--html", type=output_path, metavar="FILE", help="write a self-contained HTML token heatmap")
    group.add_argument("--png", type=output_path, metavar="FILE", help="plot the gap and surprisal series (needs matplotlib)")
    group.add_argument("--json", type=output_path, metavar="FILE", help="write the trace as JSON (Trace.from_json reads it)")
    return parent
