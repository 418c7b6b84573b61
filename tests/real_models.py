"""The real-model tier's one precondition: the embedded model is installed or already converted."""

from __future__ import annotations

import pytest

from logit_processors.models import available_models


def require_named_model(name: str) -> None:
    """Skip (with the pip command) when the named model's package is absent and nothing is cached."""
    status = next(m for m in available_models() if m.name == name)
    if not status.loadable:
        pytest.skip(f"{name} needs its package: {status.pip_command}")
