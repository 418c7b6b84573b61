"""What every subcommand shares: the error that ends a command, argument types, loading the
model, reading input, and writing the trace's table and files.

Example:
    >>> one_line(ValueError("model 'x' needs a package:\\n    pip install x"))
    "model 'x' needs a package: pip install x"
    >>> positive_int_arg("3")
    3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import ModelLoadError, available_models, load
from ..optional import matplotlib_figure

PROG = "logit-processors"


class CommandError(Exception):
    """A problem the user can fix (a bad flag, a model that cannot be loaded): one line, exit 2."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise CommandError(f"{self.prog}: error: {message}")


def fail(message: str) -> CommandError:
    """The :class:`CommandError` for ``message``, prefixed the way every error of the command is."""
    return CommandError(f"{PROG}: error: {message}")


def one_line(error: BaseException) -> str:
    """The error's message on one line (some messages put a pip command on a second line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


def from_flag(flag: str, build: Callable[..., Any], *values: Any) -> Any:
    """``build(*values)``, with a ValueError turned into an error that names ``--flag``."""
    try:
        return build(*values)
    except ValueError as error:
        raise fail(f"argument --{flag.replace('_', '-')}: {one_line(error)}") from error


# --------------------------------------------------------------------------------------------
# Argument types


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def output_path(text: str) -> Path:
    return Path(text).expanduser()


# --------------------------------------------------------------------------------------------
# The model


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    vocab_size: int  # columns of the LM head


def load_model(args: argparse.Namespace) -> LoadedModel:
    """``--model``, ``--dtype``, ``--device`` loaded (progress lines only for a first conversion)."""
    status = {m.name: m for m in available_models()}
    named = status.get(args.model.strip().lower())
    try:
        model, tokenizer = load(args.model, dtype=args.dtype, device=args.device,
                                progress=named is not None and not named.cached)
    except (ModelLoadError, ValueError, OSError) as error:
        raise fail(one_line(error)) from error
    head = model.get_output_embeddings()
    vocab_size = head.weight.shape[0] if head is not None else model.config.get_text_config().vocab_size
    return LoadedModel(model, tokenizer, int(vocab_size))


# --------------------------------------------------------------------------------------------
# Input and output


def read_text(value: str) -> str:
    """A text argument, or stdin for ``-``."""
    return sys.stdin.read() if value == "-" else value


def read_text_file(value: str, flag: str) -> str:
    """The UTF-8 text of file ``value`` (stdin for ``-``); an error naming ``flag`` if it is unreadable or blank."""
    try:
        text = sys.stdin.read() if value == "-" else Path(value).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"argument {flag}: {one_line(error)}") from error
    if not text.strip():
        raise fail(f"argument {flag}: {value!r} holds no text")
    return text


def check_parent(path: Path | None, flag: str) -> None:
    """Fail before any work if the directory of an output file does not exist."""
    if path is not None and not path.expanduser().resolve().parent.is_dir():
        raise fail(f"argument {flag}: directory {str(path.parent)!r} does not exist")


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before loading and generating if a trace output (--json/--html/--png) cannot be written or plotted."""
    for flag in ("json", "html", "png"):
        check_parent(getattr(args, flag, None), f"--{flag}")
    if getattr(args, "png", None) is not None:
        try:
            matplotlib_figure("plot_trace()")
        except ImportError as error:
            raise fail(f"--png: {one_line(error)}") from error


def console():
    from rich.console import Console

    # Wide enough for the table when the output is a file or a pipe (rich would assume 80).
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)


def wrote(path: Path) -> None:
    print(f"wrote {path}", file=sys.stderr)


def emit(args: argparse.Namespace, trace, *, prompt_lengths, table: bool) -> None:
    """Print the trace's table and write the requested files (--json, --html, --png)."""
    from .. import report

    if table:
        console().print(report.rich_table(trace, color_by=args.color_by, max_rows=args.max_rows,
                                          prompt_lengths=prompt_lengths))
    try:
        if args.json:
            trace.save_json(args.json, indent=1)
            wrote(args.json)
        if args.html:
            title = f"{PROG} {args.command}: {args.model}"
            report.save_html(trace, args.html, color_by=args.color_by, title=title, prompt_lengths=prompt_lengths)
            wrote(args.html)
        if args.png:
            report.plot_trace(trace, args.png, prompt_lengths=prompt_lengths)
            wrote(args.png)
    except OSError as error:
        raise fail(one_line(error)) from error


@contextmanager
def quiet_transformers():
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
