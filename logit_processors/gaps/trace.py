"""Traces: per-token gap statistics of whole sequences, their records and their JSON.

A :class:`Trace` holds one :class:`SequenceTrace` per sequence: token ids, their strings (each
token decoded on its own, by a :class:`TokenDecoder`) and the statistics of :mod:`.stats`. Both
ways of getting statistics return one: :func:`~logit_processors.gaps.token_stats` (teacher
forcing) and :meth:`~logit_processors.gaps.LogitGapMonitor.trace` (during ``generate()``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..optional import pandas_module
from .stats import DEFAULT_TOP_K, STATISTICS, GapStats

JSON_FORMAT = "logit_processors.gaps.Trace"
JSON_VERSION = 1


@dataclass
class SequenceTrace:
    """The statistics of one sequence's tokens (CPU tensors, one entry per token).

    ``positions`` index the tokens of the unpadded sequence (prompt included), so a monitor's
    trace of generated tokens and :func:`~logit_processors.gaps.token_stats` over prompt + output can be joined on
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
    """Per-token gap statistics of one or more sequences, from :func:`~logit_processors.gaps.token_stats` or
    :meth:`LogitGapMonitor.trace`.

    ``trace[i]`` is the :class:`SequenceTrace` of sequence ``i``. :meth:`records` flattens
    everything into one dict per token::

        {"sequence": 0, "position": 7, "token_id": 262, "token": " the",
         "top_gap": 0.41, "chosen_gap": 0.0, "surprisal": 1.02, "entropy": 2.3, "rank": 0,
         "alternatives": [{"token_id": 262, "token": " the", "logprob": -1.02}, ...]}

    Example:
        >>> from logit_processors.models import load_tiny_gpt2
        >>> from logit_processors.gaps import token_stats
        >>> model, tokenizer = load_tiny_gpt2()
        >>> trace = token_stats(model, tokenizer, "The with statement")
        >>> [r["token"] for r in trace.records()]
        ['The', ' with', ' statement']
        >>> list(trace.to_pandas()[["token", "rank"]].itertuples(index=False, name=None))[0]
        ('The', <NA>)
        >>> Trace.from_json(trace.to_json()).to_json() == trace.to_json()
        True
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
        pd = pandas_module("Trace.to_pandas()")
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


class TokenDecoder:
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


def sequence_trace(
    token_ids: torch.Tensor,
    positions: torch.Tensor,
    stats: GapStats,
    decoder: TokenDecoder | None,
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
