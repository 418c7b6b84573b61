"""Teacher-forced logits of long texts, streamed in bounded memory.

A corpus of 200,000 tokens over a 262,144-token vocabulary is 200 GB of float32 logits: they
cannot be kept. :class:`TeacherForcedLogits` yields them chunk by chunk instead, each chunk at
most :data:`CHUNK_ELEMENTS` entries (64 MB float32): the model body runs on a batch of windows,
then the LM head turns the last hidden states into logits a chunk at a time, so no
``[batch, length, vocabulary]`` tensor is ever materialized. :func:`text_windows` cuts texts into
windows the model's context holds. The consumer here is the temperature fit
(:mod:`logit_processors.calibration.fit`), which uses each chunk once, while it is in memory.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..validate import positive_int
from .model_inputs import accepts_argument, as_id_lists, left_padded_inputs, model_device

DEFAULT_MAX_LENGTH = 512
#: Logits are evaluated in chunks of at most this many entries (rows x vocabulary): 64 MB float32.
CHUNK_ELEMENTS = 1 << 24


def text_windows(
    tokenizer,
    texts: str | Sequence[str] | Sequence[Sequence[int]],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    add_special_tokens: bool = True,
) -> list[list[int]]:
    """Token-id windows of at most ``max_length`` tokens covering ``texts`` (strings or id lists).

    Longer texts are cut into consecutive windows; the special tokens the tokenizer puts in front
    of a text (e.g. Gemma's ``<bos>``) start every window, since a model never sees text without
    them. The first token of each window is context only (nothing predicts it), so each window of
    ``n`` tokens gives ``n - 1`` predictions. Windows of a single token are dropped.

    Example:
        >>> text_windows(None, [[5, 6, 7, 8, 9]], max_length=2)
        [[5, 6], [7, 8]]
    """
    max_length = positive_int("max_length", max_length)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (one token predicting the next); got {max_length}")
    sequences = as_id_lists(tokenizer, texts, add_special_tokens, None)
    prefix = _added_prefix(tokenizer) if (tokenizer is not None and add_special_tokens) else []
    windows = []
    for seq in sequences:
        lead = prefix if prefix and seq[: len(prefix)] == prefix else []
        body, step = seq[len(lead) :], max(1, max_length - len(lead))
        for start in range(0, len(body), step):
            window = lead + body[start : start + step]
            if len(window) >= 2:
                windows.append(window)
    return windows


def _added_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text's own tokens (``[]`` for most, ``[bos]`` for Gemma)."""
    with_special = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    cut = len(with_special) - len(plain)
    if cut > 0 and with_special[cut:] == plain:
        return with_special[:cut]
    return []


class TeacherForcedLogits:
    """The next-token logits of every position of ``windows``, streamed as ``(logits [R, V] float32,
    targets [R] long)`` chunks; iterable any number of times (each iteration is a forward pass).

    Windows are batched longest first (similar lengths share a batch: little padding), left-padded
    as :func:`~logit_processors.gaps.token_stats` does. Memory stays bounded by the batch: the model
    body runs on a batch, then the LM head turns the last hidden states into logits at most
    :data:`CHUNK_ELEMENTS` entries at a time, so a 262,144-token vocabulary never materializes a
    ``[batch, length, vocabulary]`` tensor. The split (body, head, final soft-capping as in Gemma)
    is checked once per model against the model's own ``forward`` on a few tokens; a model where
    it does not reproduce the logits falls back to full forward passes (with a warning).

    Example:
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> windows = text_windows(tokenizer, ["The with statement"])
        >>> source = TeacherForcedLogits(model, windows)
        >>> [(tuple(z.shape), tuple(y.shape)) for z, y in source]   # 3 tokens: 2 predictions
        [((2, 2048), (2,))]
    """

    def __init__(self, model, windows: Sequence[Sequence[int]], *, batch_size: int = 8, progress: bool = False,
                 description: str = "forward"):
        self.model = model
        self.windows = [list(w) for w in windows if len(w) >= 2]
        self.batch_size = positive_int("batch_size", batch_size)
        self.progress = progress
        self.description = description
        if not self.windows:
            raise ValueError("no text to score: every window has fewer than 2 tokens")

    @property
    def positions(self) -> int:
        """Number of predicted positions (tokens with a prediction) per pass."""
        return sum(len(w) - 1 for w in self.windows)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        model = self.model
        device = model_device(model)
        split = _split_head(model, self.windows[0])
        runner = split.body if split is not None else model
        takes_positions = accepts_argument(runner, "position_ids")
        order = sorted(range(len(self.windows)), key=lambda i: -len(self.windows[i]))
        bar = _progress_bar(self.positions, self.description, self.progress)
        try:
            for start in range(0, len(order), self.batch_size):
                batch = [self.windows[i] for i in order[start : start + self.batch_size]]
                kwargs = left_padded_inputs(batch, device, takes_positions)
                ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
                # Position j predicts token j + 1; only pairs inside the unpadded window count.
                rows, cols = (mask[:, :-1] * mask[:, 1:]).bool().nonzero(as_tuple=True)
                targets = ids[rows, cols + 1]
                with torch.inference_mode():
                    if split is not None:
                        states = split.body(**kwargs).last_hidden_state[rows, cols]
                    else:
                        states = model(**kwargs).logits[rows, cols]
                vocab = split.vocab if split is not None else states.shape[-1]
                chunk = max(1, CHUNK_ELEMENTS // vocab)
                for i in range(0, targets.shape[0], chunk):
                    with torch.inference_mode():
                        piece = states[i : i + chunk]
                        logits = split.logits(piece) if split is not None else piece
                        logits = logits.float()
                    yield logits, targets[i : i + chunk]
                    bar.update(int(logits.shape[0]))
        finally:
            bar.close()


@dataclass(repr=False)
class _SplitHead:  # the model body, its LM head and the final soft-capping
    body: Any
    head: Any
    softcap: float | None
    vocab: int

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        z = self.head(states)
        if self.softcap:  # Gemma 2/3: final_logit_softcapping
            z = torch.tanh(z / self.softcap) * self.softcap
        return z


# Per model: the verified body/head split, or None (full forward passes). Weak keys: a model
# that is garbage collected drops its entry.
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _split_head(model, sample: Sequence[int]) -> _SplitHead | None:
    if model in _SPLITS:
        return _SPLITS[model]
    split = None
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if body is not None and body is not model and weight is not None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        split = _SplitHead(body, head, getattr(config, "final_logit_softcapping", None), int(weight.shape[0]))
        if not _split_reproduces_logits(model, split, list(sample[:8])):
            warnings.warn(
                f"{type(model).__name__}: applying the LM head to the last hidden states does not reproduce the "
                "model's logits (an unknown output transform); using full forward passes, whose memory grows with "
                "batch x length x vocabulary",
                stacklevel=3,
            )
            split = None
    _SPLITS[model] = split
    return split


def _split_reproduces_logits(model, split: _SplitHead, ids: list[int]) -> bool:
    kwargs = left_padded_inputs([ids], model_device(model), False)
    with torch.inference_mode():
        try:
            expected = model(**kwargs).logits.float()
            got = split.logits(split.body(**kwargs).last_hidden_state).float()
        except (TypeError, AttributeError, ValueError):
            return False
    if got.shape != expected.shape:
        return False
    return bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max().clamp_min(1.0))))


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="tok", disable=not enabled, leave=False)
