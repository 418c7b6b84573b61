"""The README's "Serving with vLLM" Python example runs as written (its own engine, in a subprocess,
as a user would run the script) and its trace can be read back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from logit_processors.vllm import read_trace

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_vllm_example_runs(tmp_path):
    section = README.read_text().split("## Serving with vLLM", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1
    script = tmp_path / "serve_offline.py"
    script.write_text(blocks[0])
    env = {**os.environ, "LOGIT_PROCESSORS_TRACE_DIR": str(tmp_path / "traces"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-5000:]
    text = result.stdout.strip().splitlines()[-1]
    assert text and "Paris" not in text
    trace = read_trace("q1", directory=tmp_path / "traces")
    assert 1 <= len(trace[0]) <= 16
