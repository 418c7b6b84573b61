"""Every script in examples/ runs to completion (exit code 0) as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"quickstart.py", "temperature.py", "masking.py", "truncation.py"}


@pytest.mark.integration
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tiny_gpt2_path):
    # tiny_gpt2_path: the checkpoint is built (once, cached) before the scripts load it.
    # QUICK: examples that take minutes in full (examples/ensemble.py: 50 prompts) run a reduced version.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "LOGIT_PROCESSORS_EXAMPLE_QUICK": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=script.parent.parent, env=env,
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
