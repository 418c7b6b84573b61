"""Shared test configuration.

Hypothesis: no per-example deadline (the first example pays for torch's lazy initialisation,
and CI machines are noisy; performance is measured by benchmarks/, never by tests).

The tiny GPT-2 fixtures (``tiny_gpt2``, ``tiny_gpt2_path``) are defined in tests/tiny_gpt2.py;
``run`` (the command line in process) is shared by the CLI tests.
"""

import pytest
import torch
from hypothesis import settings
from tiny_gpt2 import tiny_gpt2, tiny_gpt2_path  # noqa: F401  (re-exported as fixtures)

from logit_processors import cli

settings.register_profile("logit_processors", deadline=None, max_examples=100)
settings.load_profile("logit_processors")


@pytest.fixture
def run(capsys):
    """``run(*args) -> (exit status, stdout, stderr)`` of the ``logit-processors`` command, in process."""

    def invoke(*args):
        status = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


@pytest.fixture
def deferred_checks(monkeypatch):
    """The input policy's value check as on a CUDA device, on the CPU: each call's row maxima are
    "copied" without a tensor read (a stand-in for the pinned-memory copy, made with the real
    ``tolist`` saved before any test patches it) and read at the next call. Returns the pending
    list, so a test can look at it."""
    from logit_processors import core

    read = torch.Tensor.tolist

    class Arrived:  # the copy's event: already there
        def query(self):
            return True

        def synchronize(self):
            pass

    class HostCopy:
        def __init__(self, row_max):
            self.values = read(row_max)

        def tolist(self):
            return self.values

    monkeypatch.setattr(core.PendingChecks, "defers", staticmethod(lambda device: True))
    monkeypatch.setattr(core.PendingChecks, "transfer", staticmethod(lambda row_max: (HostCopy(row_max), Arrived())))
    core.PENDING.pending = []
    yield core.PENDING
    core.PENDING.pending = []


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytest.mark.usefixtures("one_thread")``): small models in
    small batches run as fast on one thread on an idle 2-core machine, and several times faster
    on a busy one, where two OpenMP threads wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
