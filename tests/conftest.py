"""Shared test configuration.

Hypothesis: no per-example deadline (the first example pays for torch's lazy initialisation,
and CI machines are noisy; performance is measured by benchmarks/, never by tests).
"""

from hypothesis import settings

settings.register_profile("logit_processors", deadline=None, max_examples=100)
settings.load_profile("logit_processors")
