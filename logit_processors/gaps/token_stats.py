"""Teacher forcing: the gap statistics of every token of given texts, one forward pass per batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..runtime.model_inputs import accepts_argument, as_id_lists, left_padded_inputs, model_device
from ..validate import positive_int
from .stats import DEFAULT_TOP_K, GapStats, gap_stats
from .trace import SequenceTrace, TokenDecoder, Trace, sequence_trace

#: token_stats evaluates at most this many score entries (rows x vocabulary) at once.
CHUNK_ELEMENTS = 1 << 24


def token_stats(
    model,
    tokenizer,
    text_or_texts: str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]],
    *,
    add_special_tokens: bool = True,
    batch_size: int = 8,
    attention_mask: torch.Tensor | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> Trace:
    """Teacher-forced gap statistics of every token of one or more texts: one forward pass per batch.

    ``text_or_texts`` is a string, a list of strings, or token ids (a ``[B, T]`` tensor, e.g.
    ``generate()``'s ``sequences``, with an optional ``attention_mask`` marking padding, or a list
    of id lists). The statistics at token ``t`` are those of the model's distribution after tokens
    ``< t``, evaluated at token ``t``; the first token has no prediction and gets ``nan``
    statistics (``rank`` ``None``, no alternatives). Sequences are batched with left padding and
    ``position_ids`` from the attention mask, as ``generate()`` does, so padding does not change
    the statistics. ``tokenizer`` may be ``None`` for ids (then token strings are ``None``).

    Example:
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> trace = token_stats(model, tokenizer, ["The if statement", "x = 1"])
        >>> [len(seq) for seq in trace]                  # every token, the first one included
        [3, 3]
        >>> trace[0].rank.tolist()[0], trace[0].surprisal.isnan().tolist()   # nothing predicts the first
        (-1, [True, False, False])
    """
    batch_size = positive_int("batch_size", batch_size)
    top_k = positive_int("top_k", top_k)
    sequences = as_id_lists(tokenizer, text_or_texts, add_special_tokens, attention_mask)
    device = model_device(model)
    takes_positions = accepts_argument(model, "position_ids")
    decoder = TokenDecoder(tokenizer) if tokenizer is not None else None
    traces: list[SequenceTrace] = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        stats = _teacher_forced_batch(model, batch, device, takes_positions, top_k)
        for ids, seq_stats in zip(batch, stats, strict=True):
            token_ids = torch.tensor(ids, dtype=torch.long)
            traces.append(sequence_trace(token_ids, torch.arange(len(ids)), seq_stats, decoder))
    return Trace(traces, top_k=top_k)


def _teacher_forced_batch(model, batch: list[list[int]], device, takes_positions: bool, top_k: int) -> list[GapStats]:
    lengths = torch.tensor([len(ids) for ids in batch])
    kwargs = left_padded_inputs(batch, device, takes_positions)
    ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
    with torch.inference_mode():
        logits = model(**kwargs).logits  # [B, T, V]
        # Position j predicts token j + 1; only pairs inside the unpadded sequence count.
        predicting = (mask[:, :-1] * mask[:, 1:]).bool()
        rows, cols = predicting.nonzero(as_tuple=True)
        flat = _chunked_stats(logits, rows, cols, ids[rows, cols + 1], top_k)
    out: list[GapStats] = []
    offset = 0
    for length in lengths.tolist():
        n = max(length - 1, 0)
        part = GapStats(*(field[offset : offset + n] for field in flat))
        offset += n
        out.append(_prepend_no_prediction(part) if length else part)
    return out


def _chunked_stats(logits, rows, cols, chosen, top_k: int) -> GapStats:
    """:func:`gap_stats` of ``logits[rows, cols]`` in chunks bounded by :data:`CHUNK_ELEMENTS`."""
    vocab = logits.shape[-1]
    chunk = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    parts = [
        gap_stats(logits[rows[i : i + chunk], cols[i : i + chunk]], chosen[i : i + chunk], top_k=top_k)
        for i in range(0, rows.shape[0], chunk)
    ]
    if not parts:
        return gap_stats(logits.new_zeros(0, vocab), chosen.new_zeros(0), top_k=top_k)
    return GapStats(*(torch.cat(fields) for fields in zip(*parts, strict=True)))


def _prepend_no_prediction(stats: GapStats) -> GapStats:
    """Add the first token's row: nothing predicted it."""
    nan = stats.top_gap.new_full((1,), math.nan)
    return GapStats(
        top_gap=torch.cat([nan, stats.top_gap]),
        chosen_gap=torch.cat([nan, stats.chosen_gap]),
        surprisal=torch.cat([nan, stats.surprisal]),
        entropy=torch.cat([nan, stats.entropy]),
        rank=torch.cat([stats.rank.new_full((1,), -1), stats.rank]),
        top_ids=torch.cat([stats.top_ids.new_full((1, stats.top_ids.shape[-1]), -1), stats.top_ids]),
        top_logprobs=torch.cat(
            [stats.top_logprobs.new_full((1, stats.top_logprobs.shape[-1]), -math.inf), stats.top_logprobs]
        ),
    )
