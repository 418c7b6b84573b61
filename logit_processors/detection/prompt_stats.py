"""Per-token statistics of a prompt, from one forward pass: the input of attack detection.

A detector looks at the *user's* text, not at the chat template around it: the template tokens
are the same for every request (their statistics carry no information about the request) and
a system prompt would dominate the baseline. So a prompt is first encoded the way the model
will see it (chat template applied for chat models) while remembering which tokens hold the
user content: :func:`~logit_processors.runtime.prompts.encode_prompt` returns an
:class:`~logit_processors.runtime.prompts.EncodedPrompt` with ``input_ids`` and the ``scored``
token range ``[start, end)``.

:func:`prompt_stats` then runs the model once over each prompt (batched) and computes, with
:func:`logit_processors.gaps.gap_stats`, the statistics of every scored token: surprisal,
entropy, top-1/top-2 gap, chosen gap, rank (see :mod:`logit_processors.gaps`). Token ``t``'s
statistics come from the logits at position ``t - 1``. It also keeps the distribution at the
last position, i.e. the model's first decoding step, for the refusal-affirmation gap
(:mod:`logit_processors.detection.refusal_gap`).

Shared prefix: chat prompts of one model all begin with the same template and system prompt
(about 25 tokens for SmolLM2, often half of a short request). :func:`prompt_stats` runs that
common prefix once, keeps its KV cache, and runs only each prompt's remainder on top of it
(right-padded, so real tokens never see padding). The statistics are those of a plain forward
pass up to float rounding; the saving is what makes evaluating hundreds of prompts on a CPU
take minutes.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> [stats] = prompt_stats(model, tokenizer, ["The with statement"], chat_template=False)
    >>> stats.tokens(tokenizer), len(stats.surprisal)   # every token that something predicts
    ([' with', ' statement'], 2)
    >>> stats.features().shape                          # one column per FEATURES entry
    torch.Size([2, 6])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..gaps.stats import GapStats, gap_stats
from ..gaps.trace import TokenDecoder, Trace, sequence_trace
from ..runtime.model_inputs import cache_kwarg, check_length, model_device, output_cache
from ..runtime.prompts import EncodedPrompt, Message, encode_prompt
from ..validate import positive_int

#: Per-token features a detector can use, in column order of :meth:`PromptStats.features`.
FEATURES: tuple[str, ...] = ("surprisal", "excess_surprisal", "log_rank", "chosen_gap", "entropy", "top_gap")



# --------------------------------------------------------------------------------------------
# Statistics


@dataclass
class PromptStats:
    """Statistics of the scored tokens of one prompt (CPU float32 tensors of length ``n``).

    ``positions`` are the scored tokens' indices in ``encoded.input_ids``. ``next_logits`` is
    the distribution after the whole prompt (the first decoding step), kept when asked for.
    """

    encoded: EncodedPrompt
    positions: torch.Tensor
    stats: GapStats
    next_logits: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def token_ids(self) -> torch.Tensor:
        return torch.tensor(self.encoded.input_ids, dtype=torch.long)[self.positions]

    @property
    def surprisal(self) -> torch.Tensor:
        return self.stats.surprisal

    def features(self) -> torch.Tensor:
        """``[n, len(FEATURES)]`` float32: the per-token features, columns as in :data:`FEATURES`.

        ``excess_surprisal = surprisal - entropy``: for a model's own samples its expectation is
        0 (``E[-log p(x)] = H``), so it measures how much more surprising a token was than the
        model expected *at that point*: a rare word after an open question is fine, the same
        surprisal after a predictable context is not. ``log_rank = log(1 + rank)``.
        """
        s = self.stats
        return torch.stack(
            [s.surprisal, s.surprisal - s.entropy, torch.log1p(s.rank.float()), s.chosen_gap, s.entropy, s.top_gap],
            dim=-1,
        ).float()

    def trace(self, tokenizer=None):
        """The scored tokens' statistics as a :class:`logit_processors.gaps.Trace` (one sequence),
        e.g. for :func:`logit_processors.report.trace_html`."""
        decoder = TokenDecoder(tokenizer) if tokenizer is not None else None
        return Trace([sequence_trace(self.token_ids, self.positions, self.stats, decoder)],
                     top_k=int(self.stats.top_ids.shape[-1]))

    def tokens(self, tokenizer) -> list[str]:
        """The scored tokens as strings (each decoded on its own)."""
        return tokenizer.batch_decode([[i] for i in self.token_ids.tolist()], clean_up_tokenization_spaces=False)


def prompt_stats(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[Message] | EncodedPrompt],
    *,
    chat_template: bool = True,
    batch_size: int = 16,
    keep_next_logits: bool = False,
    top_k: int = 5,
) -> list[PromptStats]:
    """One forward pass per batch over ``prompts``; the statistics of each prompt's scored tokens.

    Prompts are sorted by length into batches (less padding) and the result is returned in the
    input order. Raises ``ValueError`` for an empty prompt or one longer than the model's context.
    """
    batch_size = positive_int("batch_size", batch_size)
    encoded = [p if isinstance(p, EncodedPrompt) else encode_prompt(tokenizer, p, chat_template=chat_template)
               for p in prompts]
    for e in encoded:
        check_length(model, len(e))
    runner = _PrefixRunner(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[PromptStats | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, stats in zip(chunk, runner.run([encoded[i] for i in chunk], keep_next_logits, top_k), strict=True):
            results[i] = stats
    return results  # type: ignore[return-value]


def stats_from_logits(
    encoded: EncodedPrompt,
    logits: torch.Tensor,
    first_position: int = 0,
    *,
    keep_next_logits: bool = False,
    top_k: int = 5,
) -> PromptStats:
    """:class:`PromptStats` from the logits ``[L, V]`` a forward pass computed for positions
    ``first_position ..`` of ``encoded.input_ids`` (e.g. a prefill that generation continues).

    Needs the logits of positions ``scored[0] - 1 .. scored[1] - 2`` (and of the last position
    for ``keep_next_logits``).
    """
    start, end = encoded.scored
    if start - 1 < first_position or end - 1 - first_position > logits.shape[0]:
        raise ValueError(f"logits cover positions {first_position}..{first_position + logits.shape[0] - 1}; "
                         f"scoring tokens {start}..{end - 1} needs positions {start - 1}..{end - 2}")
    positions = torch.arange(start, end)
    rows = (positions - 1 - first_position).to(logits.device)
    chosen = torch.tensor(encoded.input_ids[start:end], dtype=torch.long, device=logits.device)
    stats = GapStats(*(f.detach().to("cpu") for f in gap_stats(logits[rows], chosen, top_k=top_k)))
    last = logits[len(encoded) - 1 - first_position].float().cpu() if keep_next_logits else None
    return PromptStats(encoded, positions, stats, last)


class _PrefixRunner:
    """Runs batches of prompts over their longest common prefix, computed once and cached."""

    def __init__(self, model):
        self.model = model
        self.device = model_device(model)
        self.cache_kwarg = cache_kwarg(model)
        self._prefix: tuple[tuple[int, ...], object] | None = None

    def run(self, batch: list[EncodedPrompt], keep_next_logits: bool, top_k: int) -> list[PromptStats]:
        # Positions whose logits are needed: scored tokens - 1, and the last one for next_logits.
        first_needed = min(e.scored[0] for e in batch) - 1
        shared = _common_prefix_length([e.input_ids for e in batch])
        prefix_len = min(shared, first_needed)  # the remainder starts at or before the first needed position
        width = max(len(e) for e in batch) - prefix_len
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), prefix_len + width, dtype=torch.long)
        mask[:, :prefix_len] = 1
        for row, e in enumerate(batch):  # right padding: real tokens never attend to a pad
            rest = e.input_ids[prefix_len:]
            ids[row, : len(rest)] = torch.tensor(rest, dtype=torch.long)
            mask[row, prefix_len : prefix_len + len(rest)] = 1
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "use_cache": prefix_len > 0}
        if prefix_len > 0:
            kwargs[self.cache_kwarg] = self._prefix_cache(batch[0].input_ids[:prefix_len], len(batch))
            kwargs["position_ids"] = (prefix_len + torch.arange(width)).expand(len(batch), -1).to(self.device)
        with torch.inference_mode():
            logits = self.model(**kwargs).logits  # [B, width, V]
            return [stats_from_logits(e, logits[row], prefix_len, keep_next_logits=keep_next_logits, top_k=top_k)
                    for row, e in enumerate(batch)]

    def _prefix_cache(self, prefix: tuple[int, ...], rows: int):
        if self._prefix is None or self._prefix[0] != prefix:
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                out = self.model(input_ids=ids, use_cache=True)
            self._prefix = (prefix, output_cache(out))
        cache = copy.deepcopy(self._prefix[1])  # the forward pass appends to it: keep ours intact
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        if any(s[i] != first[i] for s in sequences):
            return i
    return n


def nan_to_num(x: torch.Tensor) -> torch.Tensor:
    """Features with ``inf`` (a token at ``-inf``) or ``nan`` made finite and large, so that
    standardized scores stay finite."""
    return torch.nan_to_num(x, nan=0.0, posinf=1e4, neginf=-1e4)


__all__ = ["FEATURES", "PromptStats", "nan_to_num", "prompt_stats", "stats_from_logits"]
