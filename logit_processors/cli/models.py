"""``logit-processors models``: the named offline models and whether they are ready;
``--path NAME`` prints the directory of a named model's converted checkpoint (converting it on first
use), the path vLLM needs: ``vllm serve "$(logit-processors models --path smollm2)"``."""

from __future__ import annotations

import argparse

from ..models import NAMED_MODELS, available_models, ensure_converted
from .common import console, fail, one_line


def add_command(commands) -> None:
    models = commands.add_parser("models", help="list the named offline models and whether they are ready")
    models.add_argument("--path", metavar="NAME", choices=sorted(NAMED_MODELS),
                        help="print the directory of NAME's converted checkpoint (converted on first use), e.g. for vLLM")
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.path is not None:
        try:
            print(ensure_converted(args.path, progress=False))
        except Exception as error:  # a missing package: its pip command
            raise fail(one_line(error)) from error
        return 0
    from rich.table import Table

    table = Table(title="named offline models (--model NAME)")
    for column in ("name", "ready", "description", "install"):
        table.add_column(column)
    for m in available_models():
        ready = "cached" if m.cached else "installed (converts on first use)" if m.installed else "no"
        table.add_row(m.name, ready, m.description, m.pip_command)
    console().print(table)
    return 0
