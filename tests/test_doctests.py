"""Every docstring example in the package runs and prints what it says (examples marked
``# doctest: +SKIP`` need a real model or tokenizer and are exercised by the other tests)."""

import doctest
import importlib
import pkgutil

import pytest

import logit_processors

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(logit_processors.__path__, prefix="logit_processors.")
    if name != "logit_processors.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
