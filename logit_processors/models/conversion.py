"""Converting a named model's GGUF once into a cached Hugging Face checkpoint, safely.

The first ``load()`` of a named model converts its GGUF into a plain Hugging Face checkpoint
(safetensors, tokenizer, chat template, generation config) under :func:`resolve_cache_dir`;
later loads read that directory. See :mod:`logit_processors.models` for why, and for the cache's
layout and safety (temporary directories renamed into place, a marker file written last).

Example:
    >>> resolve_cache_dir("smollm2", cache_dir="/tmp/lp-cache").as_posix()
    '/tmp/lp-cache/models/smollm2'
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..version import __version__
from . import named

CACHE_ENV_VAR = "LOGIT_PROCESSORS_CACHE"
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
    spec = named.named_model_or_raise(name)
    return cache_root(cache_dir) / "models" / spec.name


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The library's cache root: ``cache_dir`` if given, else ``$LOGIT_PROCESSORS_CACHE``, else
    ``${XDG_CACHE_HOME:-~/.cache}/logit_processors`` (converted models and the tiny test GPT-2)."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or None
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logit_processors"
    return Path(cache_dir).expanduser()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_current(directory: Path, spec: named.NamedModel) -> bool:
    """A complete conversion (marker present) of the installed package version, in this format.

    If the package has been uninstalled, a complete cache is still used: it is self-contained.
    """
    marker = _read_marker(directory)
    if marker is None or marker.get("format") != CACHE_FORMAT or marker.get("model") != spec.name:
        return False
    installed = named.installed_version(spec.package)
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


def _publish(partial: Path, target: Path, spec: named.NamedModel) -> Path:
    """Rename the completed ``partial`` directory to ``target``; first writer wins."""
    for _ in range(5):
        try:
            os.rename(partial, target)  # atomic; fails if target exists and is not empty
            return target
        except OSError:
            if is_current(target, spec):
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
def quiet_progress() -> Iterator[None]:
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
    model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(torch.float32))
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


def _convert_into(spec: named.NamedModel, partial: Path, steps: _Steps) -> dict[str, Any]:
    """Write the converted checkpoint into ``partial`` (without the marker); return marker fields."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir = partial / "_source"
    source_dir.mkdir()
    gguf = named.LOCATORS[spec.name](source_dir)
    if gguf is None:
        raise named.unavailable_error(spec)
    size = gguf.stat().st_size
    steps.step(f"found {gguf.name} ({size / 1e6:.0f} MB) from {spec.package} {named.installed_version(spec.package)}")
    sha256 = _sha256(gguf)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if spec.chat and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    steps.step("tokenizer read from the GGUF vocabulary; dequantizing the weights")

    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, **dtype_kwarg(torch.float32), **_gguf_quantization_config()
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
        "source_version": named.installed_version(spec.package),
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
    name: str = named.DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Directory of the converted Hugging Face checkpoint of named model ``name``.

    Converts the GGUF from the model's package on first use (or when ``force=True``, or when
    the package version changed); otherwise only checks the marker file. Safe to call from
    several processes at once.

    >>> path = ensure_converted("smollm2")           # converted once (~20 s), then only checked
    >>> sorted(p.name for p in path.iterdir())       # doctest: +NORMALIZE_WHITESPACE
    ['chat_template.jinja', 'config.json', 'generation_config.json', 'logit_processors.json',
     'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
    """
    spec = named.named_model_or_raise(name)
    target = resolve_cache_dir(spec.name, cache_dir)
    if not force and is_current(target, spec):
        return target

    package_missing, readers_missing = not named.package_present(spec), named.missing_gguf_readers()
    if package_missing or readers_missing:
        raise named.unavailable_error(spec, readers_missing, package_missing)

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target.parent, spec.name)
    steps = _Steps(spec.name, total=4, enabled=progress)
    steps.say(f"converting the GGUF into a Hugging Face checkpoint at {target} (once; later loads read it)")
    partial = Path(tempfile.mkdtemp(prefix=_scratch_prefix("partial", spec.name), dir=target.parent))
    try:
        with nullcontext() if progress else quiet_progress():
            marker = _convert_into(spec, partial, steps)
        # The marker goes last: a directory is complete if and only if it has one.
        (partial / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _finish_tree(partial)
        if force and is_current(target, spec):
            _move_aside_and_delete(target, spec.name)
        result = _publish(partial, target, spec)
    finally:
        if partial.exists():  # interrupted, failed, or lost the race
            shutil.rmtree(partial, ignore_errors=True)
    steps.say(f"done in {time.perf_counter() - steps.start:.1f} s; later loads read the cache")
    return result


def dtype_kwarg(dtype: torch.dtype | str) -> dict[str, Any]:
    """``{"dtype": dtype}`` for ``from_pretrained``: transformers >= 4.56 calls it ``dtype``, older
    versions (4.46+) ``torch_dtype``."""
    import transformers
    from packaging.version import Version

    keyword = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {keyword: dtype}
