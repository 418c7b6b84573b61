"""Shared test configuration.

Hypothesis: no per-example deadline (the first example pays for torch's lazy initialisation,
and CI machines are noisy; performance is measured by benchmarks/, never by tests).

The tiny GPT-2 fixtures (``tiny_gpt2``, ``tiny_gpt2_path``) are defined in tests/tiny_gpt2.py.
"""

from hypothesis import settings
from tiny_gpt2 import tiny_gpt2, tiny_gpt2_path  # noqa: F401  (re-exported as fixtures)

settings.register_profile("logit_processors", deadline=None, max_examples=100)
settings.load_profile("logit_processors")
