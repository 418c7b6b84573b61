"""``python -m logit_processors``: the ``logit-processors`` command (see :mod:`logit_processors.cli`)."""

from .cli import main

raise SystemExit(main())
