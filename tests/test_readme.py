"""The README stays true: its Python examples run, in order, as one script on the real model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_examples():
    assert len(python_blocks(README.read_text())) >= 5


def test_quick_start_is_exactly_two_commands():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(commands) == 1
    lines = [line for line in commands[0].splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[1] == ".venv/bin/python -m pytest -q"  # the command .ci/run runs
    assert ".venv/bin/python -m pytest -q" in (README.parent / ".ci" / "run").read_text()


@pytest.mark.real_model
def test_readme_python_examples_run(tmp_path):
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(python_blocks(README.read_text())))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"README examples failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
