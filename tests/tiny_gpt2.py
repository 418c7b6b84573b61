"""The tiny GPT-2 tier: session fixtures around :mod:`logit_processors.testing`.

The builder lives in the package (``logit_processors.testing``) so that tests, examples and
notebooks share one recipe. The checkpoint is built once per machine and cached under
``$LOGIT_PROCESSORS_CACHE`` (default ``~/.cache/logit_processors``), keyed by a hash of the
recipe; a cold build costs ~15 s of CPU time.

The model and tokenizer are shared by the whole session: tests pass generation settings as
``generate()`` arguments and never mutate ``model.generation_config`` or the tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logit_processors.models.tiny_gpt2 import load_tiny_gpt2
from logit_processors.models.tiny_gpt2 import tiny_gpt2_path as _cached_path


@pytest.fixture(scope="session")
def tiny_gpt2_path() -> Path:
    """Directory of the saved tiny GPT-2 (``save_pretrained`` output: model and tokenizer)."""
    return _cached_path()


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_path):
    """``(model, tokenizer)`` reloaded with ``from_pretrained``; LM head wider than the tokenizer."""
    model, tokenizer = load_tiny_gpt2(path=tiny_gpt2_path)
    assert model.config.vocab_size > len(tokenizer), "the tiny GPT-2's LM head must be padded"
    return model, tokenizer
