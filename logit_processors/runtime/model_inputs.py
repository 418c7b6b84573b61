"""Model plumbing shared by everything that runs a model beside ``generate()``: where the model
lives, what its ``forward`` takes, how long its context is, and token ids batched the way
``generate()`` batches them (left padding, position ids from the attention mask).

Example:
    >>> kwargs = left_padded_inputs([[5, 6, 7], [8]], "cpu", takes_positions=True)
    >>> kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    >>> kwargs["position_ids"].tolist()                  # counted from each row's first real token
    [[0, 1, 2], [0, 0, 0]]
    >>> as_id_lists(None, [[1, 2], [3]], add_special_tokens=True)
    [[1, 2], [3]]
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..validate import describe


def model_device(model) -> torch.device:
    """The device of a model's parameters (``model.device`` where the model says)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def forward_parameters(model) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``model.forward`` (empty when its signature cannot be read)."""
    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}


def accepts_argument(model, name: str) -> bool:
    """Whether ``model.forward`` takes an argument called ``name`` (e.g. ``position_ids``)."""
    return name in forward_parameters(model)


def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its KV cache by: ``cache`` (transformers >= 5.x) or
    ``past_key_values`` (earlier)."""
    return "cache" if accepts_argument(model, "cache") else "past_key_values"


def output_cache(output):
    """The KV cache of a forward pass's output, whatever the transformers version calls it."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def new_cache(model):
    """An empty ``DynamicCache`` for ``model`` (with its own layer types, e.g. sliding-window
    layers, where this transformers knows them)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def context_length(model) -> int | None:
    """The longest sequence the model accepts (``max_position_embeddings``), if it says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_length(model, n_tokens: int, *, extra: int = 0, what: str = "prompt") -> None:
    """ValueError unless ``n_tokens + extra`` fits the model's context (no silent truncation)."""
    limit = context_length(model)
    if limit is not None and n_tokens + extra > limit:
        more = f" plus {extra} new tokens" if extra else ""
        raise ValueError(
            f"{what} is {n_tokens} tokens{more}, longer than the model's context of {limit} tokens; "
            "shorten it (this library never truncates a prompt silently)"
        )


def left_padded_inputs(batch: list[list[int]], device, takes_positions: bool) -> dict[str, Any]:
    """Forward-pass keyword arguments for unpadded id lists: left-padded ``input_ids`` and
    ``attention_mask`` ``[B, width]`` on ``device``, ``use_cache=False``, and (when the model
    takes them) ``position_ids`` counted from each row's first real token, as ``generate()``
    does, so that padding changes nothing."""
    width = max((len(seq) for seq in batch), default=0) or 1
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, seq in enumerate(batch):  # left padding, like generate()
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
    if takes_positions:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    return kwargs


def as_id_lists(tokenizer, inputs, add_special_tokens: bool, attention_mask=None) -> list[list[int]]:
    """Texts, a ``[B, T]`` id tensor (with an optional ``attention_mask`` marking padding) or id
    lists, as unpadded lists of token ids; a ValueError naming ``text_or_texts`` otherwise."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 1:
            inputs = inputs[None]
        if inputs.dim() != 2 or inputs.is_floating_point():
            raise ValueError(f"token ids must be an integer tensor of shape [batch, length]; got {describe(inputs)}")
        ids = inputs.detach().cpu().long()
        if attention_mask is None:
            return ids.tolist()
        mask = attention_mask.detach().cpu()
        if mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(mask.shape)} but the token ids {tuple(ids.shape)}; they must match"
            )
        return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    if attention_mask is not None:
        raise ValueError(
            "attention_mask is only allowed with a tensor of token ids; texts are tokenized without padding"
        )
    if not isinstance(inputs, Sequence) or not inputs:
        raise ValueError(
            f"text_or_texts must be a string, a non-empty list of strings, a [batch, length] tensor of token ids "
            f"or a list of id lists; got {inputs!r}"
        )
    if all(isinstance(x, str) for x in inputs):
        if tokenizer is None:
            raise ValueError("token_stats needs a tokenizer to tokenize text; got tokenizer=None")
        return [list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]) for text in inputs]
    if all(
        isinstance(x, Sequence) and not isinstance(x, str) and all(isinstance(i, numbers.Integral) for i in x)
        for x in inputs
    ):
        return [[int(i) for i in x] for x in inputs]
    kinds = [type(x).__name__ for x in inputs][:10]
    raise ValueError(f"text_or_texts must be all strings or all lists of integer token ids; got {kinds}")
