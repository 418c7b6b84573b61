"""Model identity: which model a saved artifact (a calibration, a detector) was fitted on.

A fitted temperature or detector baseline only means something for the model it was fitted
on. :func:`model_identity` records enough to recognize that model again, and
:func:`check_identity` refuses a different one with an error that says what differs:

``name_or_path``
    informative only (the same checkpoint may be loaded from another directory);
``model_type``, ``vocab_size``, ``config_sha256``
    must match exactly: the architecture and its hyperparameters (the config without the keys
    that change with how it was loaded: dtype, transformers version, path);
``tokenizer_size``
    must match when both sides know it;
``weight_norms``
    the L2 norms of the input embedding and the output head, in float64: two fine-tunes of one
    architecture share a config but not their weights. Compared with a relative tolerance of
    1e-3, so the same weights in another dtype (float32, bfloat16, ...) still match.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> saved = model_identity(model, tokenizer)
    >>> check_identity(saved, model, tokenizer, what="calibration")   # the same model: passes
    >>> other, _ = load_tiny_gpt2(seed=1)                              # same config, other weights
    >>> check_identity(saved, other, tokenizer, what="calibration")    # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: calibration was fitted on a different model (...): weight norm of input_embeddings ...
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch

# Config keys that describe how a checkpoint was loaded, not what it is.
_VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation",
     "_attn_implementation_autoset", "attn_implementation", "quantization_config", "use_cache", "_commit_hash"}
)
WEIGHT_NORM_RTOL = 1e-3


def config_sha256(config) -> str:
    """SHA-256 of the model config without load-time keys (sorted JSON)."""
    values = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weight_norms(model) -> dict[str, float]:
    """Float64 L2 norms of the input embedding and the output head (tied heads appear once)."""
    norms: dict[str, float] = {}
    with torch.no_grad():
        for name, module in (("input_embeddings", model.get_input_embeddings()),
                             ("output_embeddings", model.get_output_embeddings())):
            weight = getattr(module, "weight", None)
            if weight is not None:
                norms[name] = _float64_norm(weight.detach())
    return norms


def _float64_norm(weight: torch.Tensor, rows: int = 4096) -> float:
    """L2 norm accumulated in float64 a block of rows at a time: a float64 copy of a 262,144-token
    embedding would be 1.3 GB."""
    flat = weight.reshape(weight.shape[0], -1) if weight.dim() > 1 else weight.reshape(-1, 1)
    total = sum(float(flat[i : i + rows].double().square().sum()) for i in range(0, flat.shape[0], rows))
    return math.sqrt(total)


def model_identity(model, tokenizer=None) -> dict[str, Any]:
    """A JSON-serializable record identifying ``model`` (and its tokenizer, if given)."""
    config = model.config
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "")),
        "model_type": getattr(config, "model_type", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "tokenizer_size": len(tokenizer) if tokenizer is not None else None,
        "config_sha256": config_sha256(config),
        "weight_norms": weight_norms(model),
    }


def identity_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two identities (empty: the same model)."""
    problems = []
    for key in ("model_type", "vocab_size", "config_sha256"):
        if saved.get(key) != current.get(key):
            problems.append(f"{key} {saved.get(key)!r} != {current.get(key)!r}")
    if None not in (saved.get("tokenizer_size"), current.get("tokenizer_size")):
        if saved["tokenizer_size"] != current["tokenizer_size"]:
            problems.append(f"tokenizer_size {saved['tokenizer_size']} != {current['tokenizer_size']}")
    saved_norms, current_norms = saved.get("weight_norms") or {}, current.get("weight_norms") or {}
    for name in sorted(set(saved_norms) & set(current_norms)):
        a, b = saved_norms[name], current_norms[name]
        if not math.isclose(a, b, rel_tol=WEIGHT_NORM_RTOL):
            problems.append(f"weight norm of {name} {a:.6g} != {b:.6g} (different weights)")
    return problems


def check_identity(saved: dict[str, Any], model, tokenizer=None, *, what: str = "this file") -> None:
    """ValueError naming the differences unless ``model`` is the model ``saved`` describes."""
    problems = identity_mismatches(saved, model_identity(model, tokenizer))
    if problems:
        raise ValueError(
            f"{what} was fitted on a different model ({saved.get('name_or_path') or 'unnamed'}): "
            + "; ".join(problems)
        )
