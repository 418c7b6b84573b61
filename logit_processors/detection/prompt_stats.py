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
    torch.Size([2, 8])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .. import numerics
from ..gaps.stats import GapStats, gap_stats
from ..gaps.trace import TokenDecoder, Trace, sequence_trace
from ..runtime.memory import release_freed_memory
from ..runtime.model_inputs import cache_kwarg, check_length, model_device, output_cache
from ..runtime.prompts import EncodedPrompt, Message, encode_prompt
from ..validate import positive_int

#: Per-token features a detector can use, in column order of :meth:`PromptStats.features`.
FEATURES: tuple[str, ...] = ("surprisal", "excess_surprisal", "log_rank", "chosen_gap", "entropy", "top_gap",
                             "standardized_surprisal", "pit_score")
#: nats^2 added to the varentropy before dividing by its square root: the model's own spread
#: of surprisal is floored at 0.5 nats, so that a token after a near-certain prediction (spread
#: ~0) gets a large but finite z-score.
VARENTROPY_FLOOR = 0.25
#: Prompts scored together are capped at this many tokens (batch rows x longest row): the
#: logits of a batch are [rows, length, V] floats, 800 MB at 4,096 x 49,152.
MAX_BATCH_TOKENS = 4096



# --------------------------------------------------------------------------------------------
# Statistics


@dataclass
class PromptStats:
    """Statistics of the scored tokens of one prompt (CPU float32 tensors of length ``n``).

    ``positions`` are the scored tokens' indices in ``encoded.input_ids``. ``next_logits`` is
    the distribution after the whole prompt (the first decoding step), kept when asked for.
    ``varentropy`` and ``mass_above``: see :func:`calibration_stats`. ``hidden``: the hidden
    state of one layer at the prompt's last token (``[d]``), kept when asked for (the
    detector's probe reads it).
    """

    encoded: EncodedPrompt
    positions: torch.Tensor
    stats: GapStats
    next_logits: torch.Tensor | None = field(default=None, repr=False)
    varentropy: torch.Tensor | None = field(default=None, repr=False)
    mass_above: torch.Tensor | None = field(default=None, repr=False)
    hidden: torch.Tensor | None = field(default=None, repr=False)

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

        The last two are invariant to how predictable the content is (code, another language, a
        log file): ``standardized_surprisal = (surprisal - entropy) / sqrt(varentropy + 0.25)``
        is the token's z-score under the model's own distribution (mean 0, variance about 1 for
        text the model predicts as well as it thinks it does, whatever its entropy);
        ``pit_score = Phi^-1(mass_above + p / 2)`` maps the probability integral transform (the
        model's probability of a more likely token, plus half the token's own) to a normal
        score: N(0, 1) for well-predicted text of any kind, large for a token the model ranks
        far down. Both need :attr:`varentropy` and :attr:`mass_above` (``nan`` without them).
        """
        s = self.stats
        nan = torch.full_like(s.surprisal, math.nan)
        varentropy = self.varentropy if self.varentropy is not None else nan
        mass_above = self.mass_above if self.mass_above is not None else nan
        excess = s.surprisal - s.entropy
        pit = (mass_above + 0.5 * torch.exp(-s.surprisal)).clamp(1e-6, 1 - 1e-6)
        return torch.stack(
            [s.surprisal, excess, torch.log1p(s.rank.float()), s.chosen_gap, s.entropy, s.top_gap,
             excess / torch.sqrt(varentropy + VARENTROPY_FLOOR), torch.special.ndtri(pit.double()).float()],
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
    hidden_layer: int | None = None,
) -> list[PromptStats]:
    """One forward pass per batch over ``prompts``; the statistics of each prompt's scored tokens.

    Prompts are sorted by length into batches of at most ``batch_size`` prompts and
    :data:`MAX_BATCH_TOKENS` tokens (less padding, bounded memory) and the result is returned in
    the input order. ``hidden_layer``: also keep that layer's hidden state at each prompt's last
    token (``hidden_states[hidden_layer]`` of the model's output; 0 is the embeddings). Raises
    ``ValueError`` for an empty prompt or one longer than the model's context.
    """
    batch_size = positive_int("batch_size", batch_size)
    encoded = [p if isinstance(p, EncodedPrompt) else encode_prompt(tokenizer, p, chat_template=chat_template)
               for p in prompts]
    for e in encoded:
        check_length(model, len(e))
    runner = _PrefixRunner(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches: list[list[int]] = [[]]
    for i in order:  # sorted by length: the newest prompt is the batch's longest
        if batches[-1] and (len(batches[-1]) == batch_size or (len(batches[-1]) + 1) * len(encoded[i]) > MAX_BATCH_TOKENS):
            batches.append([])
        batches[-1].append(i)
    results: list[PromptStats | None] = [None] * len(encoded)
    for chunk in batches if order else []:
        batch = [encoded[i] for i in chunk]
        for i, stats in zip(chunk, runner.run(batch, keep_next_logits, top_k, hidden_layer), strict=True):
            results[i] = stats
        release_freed_memory()  # else the heap fragments over many batches (see runtime.memory)
    return results  # type: ignore[return-value]


def calibration_stats(log_probs: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(varentropy, mass_above)`` of distributions ``log_probs [..., V]`` for tokens ``chosen [...]``.

    ``varentropy = Var_p[-log p] = sum p (log p + H)^2``: the variance of the surprisal of a
    token drawn from the model itself, so ``(surprisal - entropy) / sqrt(varentropy)`` is a
    z-score under the model's own distribution. ``mass_above = sum_{j: p_j > p_chosen} p_j``:
    the probability of the tokens ranked above the chosen one. ``mass_above + p_chosen / 2`` is
    the (mid-)probability integral transform: uniform on [0, 1] for text the model predicts
    well, whatever the language or domain; near 1 for a token the model finds absurd.
    Computed in float32 (masked entries, ``p = 0``, contribute nothing).

    Example:
        >>> import torch
        >>> log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
        >>> v, m = calibration_stats(log_probs, torch.tensor([1]))
        >>> round(v.item(), 4), m.item()    # Var of -log p: 0.25 * log(2)^2 ... ; mass of token 0
        (0.1201, 0.5)
    """
    log_probs = log_probs.float()
    p = log_probs.exp()
    finite = torch.where(p > 0, log_probs, torch.zeros_like(log_probs))
    entropy = -(p * finite).sum(-1, keepdim=True)
    varentropy = (p * (finite + entropy).square()).sum(-1)
    chosen_log_prob = log_probs.gather(-1, chosen.unsqueeze(-1))
    mass_above = torch.where(log_probs > chosen_log_prob, p, torch.zeros_like(p)).sum(-1)
    return varentropy, mass_above.clamp(0.0, 1.0)


#: Positions per chunk when statistics are computed from the logits of a long prompt: each
#: chunk's float32 [rows, V] temporaries stay small (256 x 49,152 x 4 bytes = 50 MB).
STATS_CHUNK = 256


def stats_from_logits(
    encoded: EncodedPrompt,
    logits: torch.Tensor,
    first_position: int = 0,
    *,
    keep_next_logits: bool = False,
    top_k: int = 5,
    hidden: torch.Tensor | None = None,
) -> PromptStats:
    """:class:`PromptStats` from the logits ``[L, V]`` a forward pass computed for positions
    ``first_position ..`` of ``encoded.input_ids`` (e.g. a prefill that generation continues).

    Needs the logits of positions ``scored[0] - 1 .. scored[1] - 2`` (and of the last position
    for ``keep_next_logits``). ``hidden``: the hidden state to keep (:attr:`PromptStats.hidden`).
    """
    start, end = encoded.scored
    if start - 1 < first_position or end - 1 - first_position > logits.shape[0]:
        raise ValueError(f"logits cover positions {first_position}..{first_position + logits.shape[0] - 1}; "
                         f"scoring tokens {start}..{end - 1} needs positions {start - 1}..{end - 2}")
    positions = torch.arange(start, end)
    rows = (positions - 1 - first_position).to(logits.device)
    chosen = torch.tensor(encoded.input_ids[start:end], dtype=torch.long, device=logits.device)
    parts = []
    for a in range(0, len(rows), STATS_CHUNK):
        chunk_logits, chunk_chosen = logits[rows[a : a + STATS_CHUNK]], chosen[a : a + STATS_CHUNK]
        gap = gap_stats(chunk_logits, chunk_chosen, top_k=top_k)
        extra = calibration_stats(numerics.log_softmax(chunk_logits), chunk_chosen)
        parts.append([f.detach().to("cpu") for f in (*gap, *extra)])
    columns = [torch.cat(c) for c in zip(*parts, strict=True)]
    stats = GapStats(*columns[: len(GapStats._fields)])
    varentropy, mass_above = columns[len(GapStats._fields):]
    # Copies, not views: a view would keep the whole batch's [B, L, V] logits (or [B, L, d]
    # hidden states) alive for as long as these statistics live.
    last = logits[len(encoded) - 1 - first_position].detach().float().cpu().clone() if keep_next_logits else None
    kept = hidden.detach().float().cpu().clone() if hidden is not None else None
    return PromptStats(encoded, positions, stats, last, varentropy, mass_above, kept)


class _PrefixRunner:
    """Runs batches of prompts over their longest common prefix, computed once and cached."""

    def __init__(self, model):
        self.model = model
        self.device = model_device(model)
        self.cache_kwarg = cache_kwarg(model)
        self._prefix: tuple[tuple[int, ...], object] | None = None

    def run(self, batch: list[EncodedPrompt], keep_next_logits: bool, top_k: int,
            hidden_layer: int | None = None) -> list[PromptStats]:
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
            out = self.model(**kwargs, output_hidden_states=hidden_layer is not None)
            hidden = out.hidden_states[hidden_layer] if hidden_layer is not None else None  # [B, width, d]
            return [stats_from_logits(e, out.logits[row], prefix_len, keep_next_logits=keep_next_logits, top_k=top_k,
                                      hidden=hidden[row, len(e) - 1 - prefix_len] if hidden is not None else None)
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
