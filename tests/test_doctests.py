"""Every docstring example in the package runs and prints what it says, subpackages included.

Examples that need a model use the tiny offline GPT-2 (built once, cached) or the embedded
SmolLM2; the few marked ``# doctest: +SKIP`` need something unavailable offline (a hub id) or
too slow for a docstring, and are exercised by the other tests (tests/test_layout.py counts them)."""

import doctest
import importlib
import inspect
import pkgutil

import pytest
from real_models import require_named_model

import logit_processors

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(logit_processors.__path__, prefix="logit_processors.")
    if not name.endswith("__main__")
)


# Examples that run the embedded SmolLM2 (offline, from its PyPI package or the cache).
NEEDS_SMOLLM2 = ('load("smollm2")', "load()", '("smollm2")')


# The vLLM adapters import vLLM (the optional extra; run in .venv-vllm).
NEEDS_VLLM = ("logit_processors.vllm.v1", "logit_processors.vllm.v2", "logit_processors.vllm.plugin")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in NEEDS_VLLM:
        pytest.importorskip("vllm", reason="the vLLM adapters run in .venv-vllm (bash scripts/setup-vllm.sh)")
    module = importlib.import_module(name)
    if any(needle in inspect.getsource(module) for needle in NEEDS_SMOLLM2):
        require_named_model("smollm2")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
