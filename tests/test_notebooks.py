"""Every notebook in notebooks/ executes end to end without an error (nbclient, kernel python3).

The tour (05) runs on the tiny GPT-2; 01, 02, 03 and 04 run on the embedded SmolLM2-135M-Instruct,
06 on SmolLM2 and Gemma-3-270M, and they are marked ``real_model``. Their models are built or converted (once per machine, cached) by a
fixture before the kernel starts, so the execution time printed for each notebook measures the
notebook itself. Time is reported, never asserted (performance is the benchmarks' business).
"""

from __future__ import annotations

import time
from pathlib import Path

import nbclient
import nbformat
import pytest
from real_models import require_named_model

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Notebooks that load the embedded SmolLM2 (``load("smollm2")``); every other notebook uses the tiny GPT-2.
REAL_MODEL_NOTEBOOKS = {
    "01_logits_as_log_counts.ipynb", "02_logit_gaps.ipynb", "03_calibration.ipynb", "04_attack_detection.ipynb",
    "06_ensembles_across_tokenizers.ipynb",
}
# Real-model notebooks that also load Gemma-3-270M.
GEMMA_NOTEBOOKS = {"06_ensembles_across_tokenizers.ipynb"}


def _params() -> list:
    return [
        pytest.param(
            path,
            marks=pytest.mark.real_model if path.name in REAL_MODEL_NOTEBOOKS else pytest.mark.integration,
            id=path.name,
        )
        for path in NOTEBOOKS
    ]


@pytest.fixture(scope="module")
def smollm2_cache():
    """Convert SmolLM2 into the cache now (a no-op once done), or skip with the pip command."""
    from logit_processors.models import ensure_converted

    require_named_model("smollm2")
    return ensure_converted("smollm2")


@pytest.fixture(scope="module")
def gemma_cache(smollm2_cache):
    """SmolLM2 and Gemma-3-270M converted into the cache now, or skip with the pip command."""
    from logit_processors.models import ensure_converted

    require_named_model("gemma3-270m")
    return ensure_converted("gemma3-270m")


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb files"
    missing = REAL_MODEL_NOTEBOOKS - {p.name for p in NOTEBOOKS}
    assert not missing, f"REAL_MODEL_NOTEBOOKS names notebooks that do not exist: {sorted(missing)}"


def test_notebooks_are_saved_without_outputs():
    # Executed outputs (images, HTML pages) bloat the repository and go stale: commit clean notebooks.
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        with_output = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.get("outputs")]
        assert not with_output, f"{path.name}: code cells {with_output} have saved outputs; clear them before saving"


@pytest.mark.parametrize("notebook", _params())
def test_notebook_executes(notebook, request):
    # Build the model the notebook loads before the kernel starts (both are cached per machine).
    fixture = "gemma_cache" if notebook.name in GEMMA_NOTEBOOKS else "smollm2_cache"
    request.getfixturevalue(fixture if notebook.name in REAL_MODEL_NOTEBOOKS else "tiny_gpt2_path")
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    print(f"\n{notebook.name}: executed in {time.perf_counter() - start:.1f} s (kernel start included)")
