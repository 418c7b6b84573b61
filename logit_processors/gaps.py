"""Per-token logit-gap statistics: how sure the model was, token by token.

The gap between two logits is a *margin*: ``z_i - z_j = log(p_i / p_j)`` is the log-odds of one
token against another, and it does not change when every logit is shifted (so raw logits and
beam search's log-probabilities give the same gaps). Thin margins mean the model was torn
between candidates; a chosen token far below the top one, or margins that suddenly collapse or
swell, are signals of uncertainty, of sampling luck, or of manipulation (a prompt injection or an
adversarial suffix pushing the model somewhere it would not go by itself).

For every position this module computes, from the next-token distribution (in float32, on the
scores' device, vectorized over batch and positions, through :mod:`logit_processors.numerics`):

``top_gap``
    ``log p_top1 - log p_top2``: the log-odds between the two leading candidates (the same number
    as the difference of their raw logits). ``+inf`` when only one token is unmasked.
``chosen_gap``
    ``log p_top1 - log p_chosen >= 0``: how far below the model's favourite the actual token was;
    0 when the model's top choice was taken.
``surprisal``
    ``-log p_chosen`` in nats.
``entropy``
    Shannon entropy of the distribution in nats.
``rank``
    Rank of the actual token: the number of tokens with a strictly higher log-probability
    (0 = top; tied tokens share a rank).
``alternatives``
    The ``top_k`` (default 5) most likely tokens with their log-probabilities.

Masked tokens (``-inf``) have probability 0: a chosen token at ``-inf`` has ``surprisal = inf``
and ``chosen_gap = inf`` (it can only happen when the statistics are taken from scores other than
the ones the token was sampled from). A fully masked row has ``top_gap = chosen_gap = nan``,
entropy 0. Columns of a padded LM head (wider than the tokenizer) are just more columns; their
token strings are ``None``.

Two ways to get them, with the same definitions and the same record schema:

* :func:`token_stats` (teacher forcing): one forward pass per batch over given texts or token ids.
  The statistics at token ``t`` describe predicting token ``t`` from tokens ``< t``. The *first*
  token has no prediction: it is included (so a trace lines up with the text) with ``nan``
  statistics, ``rank`` ``None`` and no alternatives.
* :class:`LogitGapMonitor` (during ``generate()``): a processor that leaves the scores untouched
  and records each step on the device; :meth:`LogitGapMonitor.trace` then gives the statistics of
  the *generated* tokens of each returned sequence.

Both return a :class:`Trace`: per sequence the token ids, their strings (each token decoded on its
own) and the statistics, as :meth:`Trace.records`, :meth:`Trace.to_json` / :meth:`Trace.save_json`
and :meth:`Trace.to_pandas`.

Example:
    >>> import torch
    >>> from logit_processors.gaps import gap_stats
    >>> logits = torch.tensor([[3.0, 1.0, 0.0, float("-inf")]])
    >>> s = gap_stats(logits, torch.tensor([1]), top_k=2)
    >>> round(s.top_gap.item(), 4), round(s.chosen_gap.item(), 4), s.rank.item()
    (2.0, 2.0, 1)
    >>> s.top_ids.tolist()
    [[0, 1]]
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from . import numerics
from .core import Processor, per_row, positive_int, scratch_pair, token_ids

#: The per-token statistics, in record order.
STATISTICS: tuple[str, ...] = ("top_gap", "chosen_gap", "surprisal", "entropy", "rank")
DEFAULT_TOP_K = 5
JSON_FORMAT = "logit_processors.gaps.Trace"
JSON_VERSION = 1

# token_stats evaluates at most this many score entries (rows x vocabulary) at once.
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# The statistics of one distribution (vectorized kernel shared by both paths)


class GapStats(NamedTuple):
    """Statistics of a batch of next-token distributions; every field has the batch shape ``[...]``
    (``top_ids`` / ``top_logprobs`` add a trailing ``top_k`` axis, sorted best first)."""

    top_gap: torch.Tensor
    chosen_gap: torch.Tensor
    surprisal: torch.Tensor
    entropy: torch.Tensor
    rank: torch.Tensor
    top_ids: torch.Tensor
    top_logprobs: torch.Tensor


def _summarize(scores: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_probs, top_logprobs, top_ids, entropy)``; see :func:`_top` for the top entries."""
    log_probs = numerics.log_softmax(scores)
    return log_probs, *_top(log_probs, top_k), _entropy(log_probs)


def _top(log_probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``max(top_k, 2)`` best log-probs and their ids (at least 2, for the top gap).

    When the vocabulary is narrower than that, the missing entries are ``-inf`` with id ``-1``.
    """
    wanted = max(top_k, 2)
    k = min(wanted, log_probs.shape[-1])
    top_logprobs, top_ids = log_probs.topk(k, dim=-1)
    if k < wanted:
        pad = (*top_ids.shape[:-1], wanted - k)
        top_logprobs = torch.cat([top_logprobs, top_logprobs.new_full(pad, numerics.NEG_INF)], dim=-1)
        top_ids = torch.cat([top_ids, top_ids.new_full(pad, -1)], dim=-1)
    return top_logprobs, top_ids


def _entropy(log_probs: torch.Tensor, work: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`numerics.entropy` of distributions already given as log-probabilities.

    ``numerics.entropy(scores)`` would compute the log-softmax a second time. This is its formula,
    ``-sum(p * log p)`` with masked entries (``p = 0``, ``log p = -inf``) contributing 0, on the
    log-probs we have, term for term the same numbers: clamping ``log p`` to the lowest finite
    float turns a masked term into ``0 * finite = 0`` (and keeps a NaN a NaN). ``work`` are two
    scratch tensors like ``log_probs`` to write into: :class:`LogitGapMonitor` reuses them on
    every step instead of allocating ``[rows, vocab]`` temporaries.
    """
    p, finite_log_p = work if work is not None else (torch.empty_like(log_probs), torch.empty_like(log_probs))
    torch.exp(log_probs, out=p)
    torch.clamp_min(log_probs, torch.finfo(log_probs.dtype).min, out=finite_log_p)
    return -torch.mul(p, finite_log_p, out=p).sum(dim=-1)


def _count_greater(values: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(values > threshold).sum(-1)`` (long), ``threshold`` broadcast against ``values [..., V]``.

    The comparison is written into a float tensor (``out``, may be ``values`` itself): on CPU a
    float-valued comparison is vectorized and a boolean one several times slower, and counts below
    2**24 are exact in float32.
    """
    if values.shape[-1] >= 1 << 24:
        return (values > threshold).sum(dim=-1)
    if out is None:
        out = values.new_empty(torch.broadcast_shapes(values.shape, threshold.shape))
    return torch.gt(values, threshold, out=out).sum(dim=-1).long()


def _chosen(
    log_probs: torch.Tensor, chosen: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and rank (tokens strictly more likely) of ``chosen`` in each row.

    ``out``: scratch like ``log_probs`` for the comparison (may be ``log_probs`` itself, which it
    then overwrites).
    """
    chosen_logprob = log_probs.gather(-1, chosen.unsqueeze(-1))
    rank = _count_greater(log_probs, chosen_logprob, out)
    return chosen_logprob.squeeze(-1), rank


def gap_stats(scores: torch.Tensor, chosen: torch.Tensor | None = None, *, top_k: int = DEFAULT_TOP_K) -> GapStats:
    """Gap statistics of ``scores [..., V]`` (logits or log-probs, any float dtype) for ``chosen [...]``.

    Computed in float32 (float64 stays float64) on the scores' device. Without ``chosen`` the
    chosen-token statistics are ``nan`` and ``rank`` is ``-1``.

    Example:
        >>> import torch
        >>> s = gap_stats(torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([1]))
        >>> s.top_gap.item(), s.chosen_gap.item(), s.rank.item()   # a tie: both share rank 0
        (0.0, 0.0, 0)
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() < 1 or not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor of shape [..., vocab]; got {_describe(scores)}")
    top_k = positive_int("top_k", top_k)
    log_probs, top_logprobs, top_ids, entropy = _summarize(scores, top_k)
    if chosen is None:
        chosen_logprob = torch.full_like(entropy, math.nan)
        rank = torch.full(entropy.shape, -1, dtype=torch.long, device=entropy.device)
    else:
        _check_chosen(chosen, scores)
        chosen_logprob, rank = _chosen(log_probs, chosen.to(log_probs.device))
    return _assemble(top_logprobs, top_ids, entropy, chosen_logprob, rank, top_k)


def _assemble(top_logprobs, top_ids, entropy, chosen_logprob, rank, top_k: int) -> GapStats:
    top1 = top_logprobs[..., 0]
    return GapStats(
        top_gap=top1 - top_logprobs[..., 1],
        chosen_gap=top1 - chosen_logprob,
        surprisal=-chosen_logprob,
        entropy=entropy,
        rank=rank,
        top_ids=top_ids[..., :top_k],
        top_logprobs=top_logprobs[..., :top_k],
    )


def _check_chosen(chosen: object, scores: torch.Tensor) -> None:
    if not isinstance(chosen, torch.Tensor) or chosen.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"chosen must be an integer tensor of token ids; got {_describe(chosen)}")
    if tuple(chosen.shape) != tuple(scores.shape[:-1]):
        raise ValueError(
            f"chosen has shape {tuple(chosen.shape)} but scores {tuple(scores.shape)}; "
            f"chosen must have the scores' shape without the vocabulary axis, {tuple(scores.shape[:-1])}"
        )
    vocab = scores.shape[-1]
    if chosen.numel() and bool(((chosen < 0) | (chosen >= vocab)).any()):
        bad = chosen[(chosen < 0) | (chosen >= vocab)].unique()[:10].tolist()
        raise ValueError(f"chosen contains token ids {bad} outside 0..{vocab - 1} (scores have {vocab} columns)")


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


# --------------------------------------------------------------------------------------------
# Traces


@dataclass
class SequenceTrace:
    """The statistics of one sequence's tokens (CPU tensors, one entry per token).

    ``positions`` index the tokens of the unpadded sequence (prompt included), so a monitor's
    trace of generated tokens and :func:`token_stats` over prompt + output can be joined on
    ``(sequence, position)``. ``rank`` is ``-1`` and the float statistics ``nan`` where a token
    has no prediction (the first token of a teacher-forced text). ``top_ids`` is ``-1`` and
    ``top_logprobs`` ``-inf`` where fewer than ``top_k`` tokens were unmasked.
    """

    token_ids: torch.Tensor
    positions: torch.Tensor
    top_gap: torch.Tensor
    chosen_gap: torch.Tensor
    surprisal: torch.Tensor
    entropy: torch.Tensor
    rank: torch.Tensor
    top_ids: torch.Tensor
    top_logprobs: torch.Tensor
    tokens: list[str | None] | None = None
    top_tokens: list[list[str | None]] | None = None

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])


class Trace:
    """Per-token gap statistics of one or more sequences, from :func:`token_stats` or
    :meth:`LogitGapMonitor.trace`.

    ``trace[i]`` is the :class:`SequenceTrace` of sequence ``i``. :meth:`records` flattens
    everything into one dict per token::

        {"sequence": 0, "position": 7, "token_id": 262, "token": " the",
         "top_gap": 0.41, "chosen_gap": 0.0, "surprisal": 1.02, "entropy": 2.3, "rank": 0,
         "alternatives": [{"token_id": 262, "token": " the", "logprob": -1.02}, ...]}

    Example:
        >>> from logit_processors.testing import load_tiny_gpt2          # doctest: +SKIP
        >>> from logit_processors.gaps import token_stats                # doctest: +SKIP
        >>> model, tokenizer = load_tiny_gpt2()                          # doctest: +SKIP
        >>> trace = token_stats(model, tokenizer, "The with statement")  # doctest: +SKIP
        >>> [r["token"] for r in trace.records()]                        # doctest: +SKIP
        ['The', ' with', ' statement']
        >>> trace.to_pandas()[["token", "surprisal", "top_gap"]]         # doctest: +SKIP
    """

    def __init__(self, sequences: Sequence[SequenceTrace], top_k: int = DEFAULT_TOP_K):
        self.sequences = list(sequences)
        self.top_k = top_k

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> SequenceTrace:
        return self.sequences[index]

    def __iter__(self):
        return iter(self.sequences)

    def __repr__(self) -> str:
        return f"Trace({len(self)} sequence(s), tokens per sequence {[len(s) for s in self.sequences]})"

    def records(self) -> list[dict[str, Any]]:
        """One dict per token (see the class docstring); floats stay Python floats (nan, inf)."""
        out: list[dict[str, Any]] = []
        for index, seq in enumerate(self.sequences):
            columns = {name: getattr(seq, name).tolist() for name in (*STATISTICS, "token_ids", "positions")}
            top_ids, top_logprobs = seq.top_ids.tolist(), seq.top_logprobs.tolist()
            for i in range(len(seq)):
                rank = columns["rank"][i]
                alternatives = [
                    {
                        "token_id": tid,
                        "token": seq.top_tokens[i][j] if seq.top_tokens is not None else None,
                        "logprob": lp,
                    }
                    for j, (tid, lp) in enumerate(zip(top_ids[i], top_logprobs[i], strict=True))
                    if tid >= 0 and lp > -math.inf
                ]
                out.append(
                    {
                        "sequence": index,
                        "position": columns["positions"][i],
                        "token_id": columns["token_ids"][i],
                        "token": seq.tokens[i] if seq.tokens is not None else None,
                        "top_gap": columns["top_gap"][i],
                        "chosen_gap": columns["chosen_gap"][i],
                        "surprisal": columns["surprisal"][i],
                        "entropy": columns["entropy"][i],
                        "rank": None if rank < 0 else rank,
                        "alternatives": alternatives,
                    }
                )
        return out

    def to_json(self, indent: int | None = None) -> str:
        """Strict JSON (no NaN/Infinity literals): ``nan`` becomes ``null``, ``±inf`` the strings
        ``"inf"`` / ``"-inf"``. Layout: ``{"format", "version", "top_k", "sequences": [{"sequence",
        "records": [...]}]}``; :meth:`from_json` reads it back."""
        by_sequence: list[list[dict[str, Any]]] = [[] for _ in self.sequences]
        for record in self.records():
            by_sequence[record["sequence"]].append(_json_safe(record))
        document = {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "top_k": self.top_k,
            "sequences": [{"sequence": i, "records": recs} for i, recs in enumerate(by_sequence)],
        }
        return json.dumps(document, indent=indent, allow_nan=False, ensure_ascii=False)

    def save_json(self, path: str | os.PathLike, indent: int | None = None) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent=indent))

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Rebuild a trace from :meth:`to_json` output."""
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
            raise ValueError(f"not a {JSON_FORMAT} document (missing or wrong 'format' field)")
        if document.get("version") != JSON_VERSION:
            raise ValueError(f"unsupported {JSON_FORMAT} version {document.get('version')!r}; expected {JSON_VERSION}")
        top_k = int(document["top_k"])
        sequences = []
        for entry in document["sequences"]:
            recs = entry["records"]

            def floats(name: str, recs=recs) -> torch.Tensor:
                return torch.tensor([_from_json_float(r[name]) for r in recs], dtype=torch.float32)

            top_ids = torch.full((len(recs), top_k), -1, dtype=torch.long)
            top_logprobs = torch.full((len(recs), top_k), -math.inf, dtype=torch.float32)
            top_tokens: list[list[str | None]] = []
            for i, r in enumerate(recs):
                alts = r["alternatives"][:top_k]
                for j, alt in enumerate(alts):
                    top_ids[i, j] = alt["token_id"]
                    top_logprobs[i, j] = _from_json_float(alt["logprob"])
                top_tokens.append([a["token"] for a in alts] + [None] * (top_k - len(alts)))
            sequences.append(
                SequenceTrace(
                    token_ids=torch.tensor([r["token_id"] for r in recs], dtype=torch.long),
                    positions=torch.tensor([r["position"] for r in recs], dtype=torch.long),
                    top_gap=floats("top_gap"),
                    chosen_gap=floats("chosen_gap"),
                    surprisal=floats("surprisal"),
                    entropy=floats("entropy"),
                    rank=torch.tensor([-1 if r["rank"] is None else r["rank"] for r in recs], dtype=torch.long),
                    top_ids=top_ids,
                    top_logprobs=top_logprobs,
                    tokens=[r["token"] for r in recs],
                    top_tokens=top_tokens,
                )
            )
        return cls(sequences, top_k=top_k)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Trace:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def to_pandas(self):
        """A ``pandas.DataFrame`` with one row per token (the :meth:`records`); ``rank`` is a
        nullable integer column. Needs pandas (``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError as error:  # pragma: no cover - exercised by monkeypatching the import
            raise ImportError("Trace.to_pandas() needs pandas, which is not installed: pip install pandas") from error
        columns = ["sequence", "position", "token_id", "token", *STATISTICS, "alternatives"]
        frame = pd.DataFrame.from_records(self.records(), columns=columns)
        frame["rank"] = frame["rank"].astype("Int64")
        return frame


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _from_json_float(value: Any) -> float:
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    return float(value)


class _Decoder:
    """Token id -> string, each token decoded on its own and cached; ``None`` outside the
    tokenizer (the extra columns of a padded LM head)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.size = len(tokenizer)
        self.cache: dict[int, str | None] = {}

    def __call__(self, ids: list[int]) -> list[str | None]:
        missing = sorted({i for i in ids if i not in self.cache})
        known = [i for i in missing if 0 <= i < self.size]
        if known:
            texts = self.tokenizer.batch_decode(
                [[i] for i in known], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            self.cache.update(zip(known, texts, strict=True))
        for i in missing:
            self.cache.setdefault(i, None)
        return [self.cache[i] for i in ids]


def _sequence_trace(
    token_ids: torch.Tensor,
    positions: torch.Tensor,
    stats: GapStats,
    decoder: _Decoder | None,
) -> SequenceTrace:
    cpu = {name: value.detach().to("cpu") for name, value in stats._asdict().items()}
    floats = {name: cpu[name].float() for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "top_logprobs")}
    token_ids = token_ids.detach().to("cpu", torch.long)
    top_ids = cpu["top_ids"].long()
    tokens = top_tokens = None
    if decoder is not None:
        tokens = decoder(token_ids.tolist())
        top_tokens = [decoder(row) for row in top_ids.tolist()]
    return SequenceTrace(
        token_ids=token_ids,
        positions=positions.detach().to("cpu", torch.long),
        top_gap=floats["top_gap"],
        chosen_gap=floats["chosen_gap"],
        surprisal=floats["surprisal"],
        entropy=floats["entropy"],
        rank=cpu["rank"].long(),
        top_ids=top_ids,
        top_logprobs=floats["top_logprobs"],
        tokens=tokens,
        top_tokens=top_tokens,
    )


# --------------------------------------------------------------------------------------------
# Path 1: teacher forcing


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
        >>> from logit_processors.testing import load_tiny_gpt2          # doctest: +SKIP
        >>> model, tokenizer = load_tiny_gpt2()                          # doctest: +SKIP
        >>> trace = token_stats(model, tokenizer, ["def f(x):", "x = 1"])  # doctest: +SKIP
        >>> max(trace.records(), key=lambda r: r["surprisal"])["token"]  # doctest: +SKIP
    """
    batch_size = positive_int("batch_size", batch_size)
    top_k = positive_int("top_k", top_k)
    sequences = _as_id_lists(tokenizer, text_or_texts, add_special_tokens, attention_mask)
    device = _model_device(model)
    takes_positions = _accepts(model, "position_ids")
    decoder = _Decoder(tokenizer) if tokenizer is not None else None
    traces: list[SequenceTrace] = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        stats = _teacher_forced_batch(model, batch, device, takes_positions, top_k)
        for ids, seq_stats in zip(batch, stats, strict=True):
            token_ids = torch.tensor(ids, dtype=torch.long)
            traces.append(_sequence_trace(token_ids, torch.arange(len(ids)), seq_stats, decoder))
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


def left_padded_inputs(batch: list[list[int]], device, takes_positions: bool) -> dict[str, Any]:
    """Forward-pass keyword arguments for unpadded id lists: left-padded ``input_ids`` and
    ``attention_mask`` ``[B, width]`` on ``device``, ``use_cache=False``, and (when the model
    takes them) ``position_ids`` counted from each row's first real token, as ``generate()``
    does, so that padding changes nothing. Shared with :mod:`logit_processors.calibration`."""
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


def _chunked_stats(logits, rows, cols, chosen, top_k: int) -> GapStats:
    """:func:`gap_stats` of ``logits[rows, cols]`` in chunks bounded by :data:`_CHUNK_ELEMENTS`."""
    vocab = logits.shape[-1]
    chunk = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
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


def _as_id_lists(tokenizer, inputs, add_special_tokens: bool, attention_mask) -> list[list[int]]:
    """Normalize texts / id tensors / id lists to unpadded lists of token ids."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 1:
            inputs = inputs[None]
        if inputs.dim() != 2 or inputs.is_floating_point():
            raise ValueError(f"token ids must be an integer tensor of shape [batch, length]; got {_describe(inputs)}")
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


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Path 2: during generate()


class _StepBuffer:
    """Per-step device tensors stacked on a leading step axis; the capacity doubles when full,
    so appending is amortized O(1) and never leaves the device."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.n = 0
        self.capacity = 0

    def append(self, **values: torch.Tensor) -> None:
        if self.n == self.capacity:
            self.capacity = max(32, 2 * self.capacity)
            for name, value in values.items():
                grown = value.new_empty((self.capacity, *value.shape))
                if self.n:
                    grown[: self.n] = self.tensors[name][: self.n]
                self.tensors[name] = grown
        for name, value in values.items():
            self.tensors[name][self.n] = value
        self.n += 1

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name][: self.n]


class LogitGapMonitor(Processor):
    """Records the gap statistics of every generation step; returns the scores unchanged.

    Pass it to ``generate(logits_processor=[monitor])`` and read :meth:`trace` afterwards. It
    returns the very ``scores`` object it was given and never reads tensor data back to the
    host during generation: each step's summaries (top ``top_k`` log-probs and ids, entropy) go
    into preallocated, doubling device buffers. The chosen token of step ``s`` is only known at
    step ``s + 1`` (it is the last column of ``input_ids`` then), so each call first resolves
    the previous step's chosen tokens (their log-prob and rank) against the previous step's
    log-probs, the only ``[rows, vocab]`` data kept, then summarizes the current step. The last
    step is resolved by :meth:`trace` from the returned sequences. Two ``[rows, vocab]`` scratch
    tensors are reused by every step (allocating them anew costs more than the arithmetic on a
    CPU); :meth:`reset` frees them.

    What it sees: the scores at its place in the processor list. ``generate()`` puts custom
    processors after its own logits processors (repetition penalty, ... from the generation
    config; none by default) and *before* its sampling warpers (temperature, top-k, top-p), so
    with ``do_sample=True`` it sees the model's distribution before temperature and truncation
    (``output_logits``), not the warped one tokens are drawn from (``output_scores``). Inside a
    :class:`Chain` it sees what the processors before it produced: put it first to watch the
    model, last to watch what your processors made of it. Under beam search the scores are
    already log-softmax'd; the statistics are shift-invariant, so they agree with raw logits.

    Rows and beam search: a *row* is whatever ``generate()`` hands to processors, one running
    sequence per row: a prompt, a copy of it for ``num_return_sequences``, or a running beam.
    Beam search reorders rows between steps; the monitor follows each row's parent by matching
    token histories (``input_ids[:, :-1]`` of this step against the rows of the previous step),
    so :meth:`trace` can return, per returned sequence, the statistics of exactly the steps that
    produced its tokens, even for a hypothesis that finished early. The last token of such a
    hypothesis (usually EOS) is never seen in a later step: it is resolved exactly when it is one
    of ``eos_token_id`` (recorded each step), else from the kept top ``top_k`` alternatives,
    else its statistics are ``nan`` (``rank`` ``-1``).

    A new ``generate()`` call is detected from ``input_ids`` alone, never from call order: a
    different number of rows, a length that is not the previous length + 1, or a row whose
    history matches no previous row starts a new trace (detected on the device; old steps are
    dropped at the next length change). One case looks exactly like a continuation: a call whose
    prompt is the previous call's last step plus the token chosen there (feeding ``sequences``
    straight back); call :meth:`reset` between such calls. Assisted (speculative) generation,
    which scores several candidate positions per forward pass, is not supported: each of its
    verification passes looks like a new generation.

    Example:
        >>> from logit_processors.testing import load_tiny_gpt2           # doctest: +SKIP
        >>> model, tokenizer = load_tiny_gpt2()                           # doctest: +SKIP
        >>> monitor = LogitGapMonitor(tokenizer)                          # doctest: +SKIP
        >>> inputs = tokenizer(["The if statement"], return_tensors="pt") # doctest: +SKIP
        >>> out = model.generate(**inputs, logits_processor=[monitor], max_new_tokens=8,
        ...                      do_sample=False, return_dict_in_generate=True)  # doctest: +SKIP
        >>> trace = monitor.trace(out, attention_mask=inputs["attention_mask"])  # doctest: +SKIP
        >>> [(r["token"], round(r["top_gap"], 2)) for r in trace.records()]      # doctest: +SKIP

    Thin ``top_gap`` values mark the steps where the model hesitated; a large ``chosen_gap``
    marks a token that sampling (or a constraint) took far from the model's favourite.
    """

    def __init__(self, tokenizer=None, *, eos_token_id: int | Sequence[int] | None = None, top_k: int = DEFAULT_TOP_K):
        self.tokenizer = tokenizer
        self.top_k = positive_int("top_k", top_k)
        if eos_token_id is None and tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            eos_token_id = tokenizer.eos_token_id
        if eos_token_id is None:
            self.eos_token_ids: list[int] = []
        else:
            ids = [eos_token_id] if isinstance(eos_token_id, numbers.Integral) else list(eos_token_id)
            self.eos_token_ids = token_ids("eos_token_id", ids)
        self.reset()

    def _repr_fields(self) -> dict[str, object]:
        return {"top_k": self.top_k, "eos_token_id": self.eos_token_ids}

    def reset(self) -> None:
        """Forget everything recorded."""
        self._steps: _StepBuffer | None = None
        self._lengths: list[int] = []
        self._last_ids: torch.Tensor | None = None
        self._last_log_probs: torch.Tensor | None = None
        self._prompts: torch.Tensor | None = None
        self._eos: torch.Tensor | None = None
        self._eos_list: list[int] = []
        self._work: tuple[torch.Tensor, torch.Tensor] | None = None  # per-step scratch, reused
        self._preference: torch.Tensor | None = None

    # -- hot path ------------------------------------------------------------------------------

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        rows, length = input_ids.shape
        last = self._last_ids
        continuing = (
            last is not None
            and last.shape[0] == rows
            and last.shape[1] + 1 == length
            and last.device == input_ids.device
            and self._last_log_probs.shape[-1] == scores.shape[-1]
        )
        device = input_ids.device
        if not continuing:
            self._begin(rows, scores.shape[-1], device)
        log_probs = numerics.log_softmax(scores)
        # The step's other [rows, vocab] work happens in two scratch tensors kept between steps:
        # allocating fresh ones every step costs more than the arithmetic on a CPU.
        work = self._workspace(log_probs)
        top_logprobs, top_ids = _top(log_probs, self.top_k)
        entropy = _entropy(log_probs, work)
        if continuing:
            parent, new_start = self._parents(input_ids, last)
            token_in = input_ids[:, -1]
            previous = torch.index_select(self._last_log_probs, 0, parent, out=work[0])
            in_logprob, in_rank = _chosen(previous, token_in, out=previous)
        else:
            parent = torch.arange(rows, device=device)
            new_start = torch.ones((), dtype=torch.bool, device=device)
            token_in = torch.full((rows,), -1, dtype=torch.long, device=device)
            in_logprob = torch.full((rows,), math.nan, dtype=log_probs.dtype, device=device)
            in_rank = torch.full((rows,), -1, dtype=torch.long, device=device)
        self._remember_prompt(input_ids, new_start)
        step = {
            "parent": parent,
            "token_in": token_in,
            "in_logprob": in_logprob,
            "in_rank": in_rank,
            "top_logprobs": top_logprobs,
            "top_ids": top_ids,
            "entropy": entropy,
            "new_start": new_start,
        }
        if self._eos is not None:
            eos_logprob = log_probs.index_select(-1, self._eos)  # [rows, n_eos]
            eos_rank = torch.stack(
                [_count_greater(log_probs, eos_logprob[:, e, None], out=work[0]) for e in range(len(self._eos_list))],
                dim=-1,
            )
            step["eos_logprob"], step["eos_rank"] = eos_logprob, eos_rank
        self._steps.append(**step)
        self._lengths.append(length)
        self._last_ids = input_ids.clone()  # never aliased: nobody can edit our copy in place
        self._last_log_probs = log_probs
        return scores

    def _workspace(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two scratch tensors shaped like ``like`` (this step's log-probs), reused across steps."""
        self._work = scratch_pair(self._work, like.shape, like.dtype, like.device)
        return self._work

    def _parents(self, input_ids: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parent of each row, and whether this step starts a new generation (both on the device).

        The parent is the previous row whose whole history is this row's history minus its last
        token, preferring the row itself (greedy and sampling never move rows); a row that
        matches no previous row means a new ``generate()`` call.
        """
        rows = input_ids.shape[0]
        match = (input_ids[:, None, :-1] == last[None, :, :]).all(dim=-1)  # [rows, previous rows]
        preference = self._preference
        if preference is None or preference.shape[0] != rows or preference.device != input_ids.device:
            # 3 for the row itself, 2 for another matching row, -1 (below) for no match.
            preference = self._preference = 2 + torch.eye(rows, dtype=torch.long, device=input_ids.device)
        parent = torch.where(match, preference, -1).argmax(dim=-1)
        return parent, match.any(dim=-1).all().logical_not()

    def _begin(self, rows: int, vocab: int, device: torch.device) -> None:
        self.reset()
        self._steps = _StepBuffer()
        self._prompts = torch.zeros(rows, 0, dtype=torch.long, device=device)
        eos = [i for i in self.eos_token_ids if i < vocab]
        self._eos = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
        self._eos_list = eos

    def _remember_prompt(self, input_ids: torch.Tensor, new_start: torch.Tensor) -> None:
        """Keep the rows of the step that started the current generation (a device-side select,
        since whether this step starts one is only known on the device)."""
        rows, length = input_ids.shape
        if self._prompts.shape[1] < length:
            grown = self._prompts.new_zeros(rows, max(2 * self._prompts.shape[1], length, 16))
            grown[:, : self._prompts.shape[1]] = self._prompts
            self._prompts = grown
        self._prompts[:, :length] = torch.where(new_start, input_ids, self._prompts[:, :length])

    # -- reading the trace (host side) ---------------------------------------------------------

    def trace(self, output=None, *, tokenizer=None, attention_mask: torch.Tensor | None = None) -> Trace:
        """Per returned sequence, the statistics of its generated tokens.

        ``output`` is what ``generate()`` returned: a ``GenerateOutput`` (its ``sequences``) or
        the sequences tensor ``[R, prompt + generated]``. Each returned sequence is matched to the
        recorded rows by its tokens, so ``num_return_sequences`` and beam search (where the ``R``
        returned sequences are not the running rows) work; tokens after a sequence's first EOS,
        and the padding of beam hypotheses that finished early, are left out. Without ``output``
        the trace covers the rows running at the last step, up to the token chosen at the step
        before it (the last step's choice is not known yet).

        ``attention_mask`` is the prompt's mask given to ``generate()`` (``[prompts, prompt
        length]``); it only sets ``positions`` (index in the unpadded sequence). Without it,
        leading pad tokens (when ``tokenizer`` has a pad token) are taken as left padding.
        """
        steps = self._steps
        if steps is None or steps.n == 0:
            raise ValueError(
                "LogitGapMonitor.trace(): nothing recorded yet; "
                "pass the monitor to generate(logits_processor=[...]) first"
            )
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        new_start = steps.get("new_start").cpu()
        first = int(new_start.nonzero().max())  # the step that began the current generation
        prompt_length = self._lengths[first]
        n_steps = steps.n - first
        sequences = self._last_ids.cpu() if output is None else self._returned_sequences(output)
        if sequences.shape[1] < prompt_length:
            raise ValueError(
                f"output sequences have length {sequences.shape[1]}, shorter than the recorded prompt length "
                f"{prompt_length}: they do not come from the generate() call this monitor recorded last"
            )

        cpu = {name: steps.get(name)[first:].cpu() for name in steps.tensors}
        prompts = self._prompts[:, :prompt_length].cpu()
        generated = sequences[:, prompt_length:]
        eos = set(self.eos_token_ids)
        if not eos and tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            eos = {int(tokenizer.eos_token_id)}
        pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None

        # Candidate rows per step of each returned sequence: rows whose history is that
        # sequence's prompt plus its first k generated tokens.
        candidates = [(prompts[None, :, :] == sequences[:, None, :prompt_length]).all(dim=-1)]
        unmatched = (~candidates[0].any(dim=-1)).nonzero().flatten().tolist()
        if unmatched:
            raise ValueError(
                f"returned sequence(s) {unmatched[:10]} have a prompt that no recorded row had: this output does not "
                "come from the generate() call this monitor recorded last"
            )
        for k in range(min(generated.shape[1], n_steps - 1)):
            parents, tokens = cpu["parent"][k + 1], cpu["token_in"][k + 1]
            candidates.append(candidates[k][:, parents] & (tokens[None, :] == generated[:, k, None]))

        prompt_lengths = self._prompt_lengths(sequences[:, :prompt_length], attention_mask, pad_id)
        decoder = _Decoder(tokenizer) if tokenizer is not None else None
        traces = []
        for r in range(sequences.shape[0]):
            gen = generated[r].tolist()
            wanted = len(gen)
            for k, token in enumerate(gen):
                if token in eos:
                    wanted = k + 1
                    break
            stats, count = self._walk(r, candidates, cpu, gen, wanted, first, eos, pad_id, sequences.shape[0])
            token_ids = generated[r, :count]
            positions = prompt_lengths[r] + torch.arange(count)
            traces.append(_sequence_trace(token_ids, positions, stats, decoder))
        return Trace(traces, top_k=self.top_k)

    def _walk(self, r, candidates, cpu, gen, wanted, first, eos, pad_id, n_returned) -> tuple[GapStats, int]:
        """Follow returned sequence ``r`` through the recorded steps; its statistics and length."""
        limit = min(wanted, len(candidates) - 1)
        reached = max(k for k in range(limit + 1) if bool(candidates[k][r].any()))
        alive = candidates[reached][r]
        # Rows with identical histories are interchangeable; prefer the row with the same index
        # when rows and returned sequences correspond one to one (greedy, sampling).
        row = r if n_returned == len(alive) and bool(alive[r]) else int(alive.nonzero()[0])
        path = [row]
        for k in range(reached, 0, -1):
            row = int(cpu["parent"][k][row])
            path.append(row)
        path.reverse()  # path[k]: the row at step k whose distribution produced token k

        count = reached if reached == wanted else reached + 1
        rest = gen[count:wanted]
        if rest and not _looks_like_padding(gen[count - 1], rest, eos, pad_id):
            raise ValueError(
                f"returned sequence {r} leaves the recorded generation at generated token {count} "
                f"(id {gen[count]}): this output does not come from the generate() call this monitor recorded last"
            )
        step_idx = torch.arange(count)
        row_idx = torch.tensor(path[:count], dtype=torch.long)
        top_logprobs = cpu["top_logprobs"][step_idx, row_idx]
        top_ids = cpu["top_ids"][step_idx, row_idx]
        entropy = cpu["entropy"][step_idx, row_idx]
        # Token k was resolved at step k + 1, in the row that continued with it.
        resolved = min(count, reached)
        child_steps = torch.arange(1, resolved + 1)
        child_rows = torch.tensor(path[1 : resolved + 1], dtype=torch.long)
        chosen_logprob = cpu["in_logprob"][child_steps, child_rows]
        rank = cpu["in_rank"][child_steps, child_rows]
        if count > resolved:  # the last token ended its hypothesis, or was chosen at the last step
            lp, rk = self._resolve_last(reached, path[reached], gen[reached], cpu, first, top_logprobs[-1], top_ids[-1])
            chosen_logprob = torch.cat([chosen_logprob, torch.tensor([lp], dtype=chosen_logprob.dtype)])
            rank = torch.cat([rank, torch.tensor([rk], dtype=torch.long)])
        return _assemble(top_logprobs, top_ids, entropy, chosen_logprob, rank, self.top_k), count

    def _resolve_last(self, k, row, token, cpu, first, top_logprobs, top_ids) -> tuple[float, int]:
        """Log-prob and rank of ``token`` chosen at (segment) step ``k`` by ``row``, with no later step to tell."""
        if first + k == self._steps.n - 1:  # the final step: its log-probs are still here
            lp_row = self._last_log_probs[row]
            lp = lp_row[token]
            return float(lp), int((lp_row > lp).sum())
        if token in self._eos_list and "eos_logprob" in cpu:
            e = self._eos_list.index(token)
            return float(cpu["eos_logprob"][k, row, e]), int(cpu["eos_rank"][k, row, e])
        hits = (top_ids == token).nonzero()
        if len(hits):
            lp = top_logprobs[int(hits[0])]
            return float(lp), int((top_logprobs > lp).sum())
        return math.nan, -1

    @staticmethod
    def _returned_sequences(output) -> torch.Tensor:
        sequences = getattr(output, "sequences", output)
        if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.is_floating_point():
            raise ValueError(
                "output must be what generate() returned (a GenerateOutput or a [sequences, length] tensor of "
                f"token ids); got {_describe(sequences)}"
            )
        return sequences.detach().cpu().long()

    def _prompt_lengths(self, prompts: torch.Tensor, attention_mask, pad_id) -> torch.Tensor:
        """Unpadded prompt length of each returned row (where its generated tokens start)."""
        rows, width = prompts.shape
        if attention_mask is not None:
            mask = attention_mask.detach().cpu()
            if mask.dim() != 2 or mask.shape[1] != width:
                raise ValueError(
                    f"attention_mask must be the prompt mask given to generate(), shape [prompts, {width}]; "
                    f"got {_describe(attention_mask)}"
                )
            return per_row("attention_mask", mask.long().sum(-1), rows)
        if pad_id is None:
            return torch.full((rows,), width, dtype=torch.long)
        leading_pad = (prompts == pad_id).long().cumprod(dim=-1).sum(dim=-1)
        return width - leading_pad


def _looks_like_padding(last: int, rest: list[int], eos: set[int], pad_id: int | None) -> bool:
    """Whether the tokens after a sequence's last recorded token are only padding."""
    if last in eos:
        return True
    fill = eos | ({pad_id} if pad_id is not None else set())
    if fill:
        return all(t in fill for t in rest)
    return len(set(rest)) == 1
