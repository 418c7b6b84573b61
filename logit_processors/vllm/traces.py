"""Per-token gap traces of vLLM requests: written to a directory by the engine, read back as a
:class:`~logit_processors.Trace` (the data :class:`~logit_processors.LogitGapMonitor` gives in HF).

Why a file keyed by the caller: a vLLM logits processor has no channel to the response, it never
learns the request id, and it runs in the engine's process, not the caller's (``vllm serve``: the
caller is an HTTP client). So the caller names the trace, ``"logit_processors_trace": "KEY"``, and
the engine appends one JSON line per step to ``$LOGIT_PROCESSORS_TRACE_DIR/KEY.jsonl`` (one line
is one ``write``: a reader never sees half a step, a crash loses at most the last step). Lines are
keyed by the token's position, so a request that vLLM preempts and resumes rewrites the same
positions instead of mixing histories. :func:`read_trace` assembles the lines; the token chosen at
the last step is known to the engine only if the request leaves the batch while it runs, so pass
the completion's ``token_ids`` (as ``LogitGapMonitor.trace(output)`` takes the output).

The statistics are those of the logits as the adapter receives them, before the request's own
processors: the model's distribution (after vLLM's own logit bias, bad words and min-tokens
masks, if the request set any), as a ``LogitGapMonitor`` placed first in HF.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import numerics
from ..gaps.stats import DEFAULT_TOP_K, assemble_stats, count_greater, entropy_of_log_probs, top_candidates
from ..gaps.trace import TokenDecoder, Trace, sequence_trace

#: The server's trace directory (unset: no traces; a request asking for one is refused).
TRACE_DIR_ENV = "LOGIT_PROCESSORS_TRACE_DIR"
FORMAT = "logit_processors.vllm.trace"
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_trace_key(name: str, key: object) -> str:
    """A trace key: 1-128 letters, digits, ``.``, ``_``, ``-``, not starting with a dot (a file name
    inside the trace directory, never a path)."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"{name} must be a key of 1-128 letters, digits, '.', '_' or '-' (not starting with '.' "
                         f"or '-'); got {key!r}")
    return key


class TraceSink:
    """The directory traces are written to (``None`` from :meth:`from_environment` when unset)."""

    def __init__(self, directory: str | os.PathLike, top_k: int = DEFAULT_TOP_K):
        self.directory = Path(directory)
        self.top_k = top_k

    @classmethod
    def from_environment(cls) -> TraceSink | None:
        directory = os.environ.get(TRACE_DIR_ENV)
        return cls(directory) if directory else None

    def path(self, key: str) -> Path:
        return self.directory / f"{check_trace_key('key', key)}.jsonl"

    def recorder(self, key: str, prompt_length: int, eos_token_ids: Sequence[int]) -> TraceRecorder:
        return TraceRecorder(self.path(key), prompt_length, self.top_k, eos_token_ids)


class TraceRecorder:
    """One request's trace: a header line, then per step the summary of the logits (top-k, entropy,
    the EOS tokens' log-prob and rank) and the resolution of the previous step's chosen token.
    Only the last step's log-probabilities are kept (to resolve the token chosen there)."""

    def __init__(self, path: Path, prompt_length: int, top_k: int, eos_token_ids: Sequence[int]):
        self.path, self.top_k, self.eos = path, top_k, [int(i) for i in eos_token_ids]
        self.last: tuple[int, torch.Tensor] | None = None  # (position, log-probs [V]) of the last step
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "version": 1, "prompt_length": prompt_length, "top_k": top_k, "eos_token_ids": self.eos}
        path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    @staticmethod
    def summarize(rows: torch.Tensor, recorders: Sequence[TraceRecorder]) -> list[dict]:
        """Each row's summary (one batched pass over the traced rows)."""
        log_probs = numerics.log_softmax(rows.float())
        top_k = max(r.top_k for r in recorders)
        top_logprobs, top_ids = top_candidates(log_probs, top_k)
        entropy = entropy_of_log_probs(log_probs)
        summaries = []
        for i, recorder in enumerate(recorders):
            eos = torch.tensor(recorder.eos, dtype=torch.long, device=rows.device)
            eos_logprobs = log_probs[i].index_select(0, eos)
            eos_ranks = [int(count_greater(log_probs[i], lp)) for lp in eos_logprobs]
            summaries.append({
                "log_probs": log_probs[i].clone(),
                "top_ids": top_ids[i, : recorder.top_k].tolist(),
                "top_logprobs": top_logprobs[i, : recorder.top_k].tolist(),
                "entropy": float(entropy[i]),
                "eos_logprobs": eos_logprobs.tolist(),
                "eos_ranks": eos_ranks,
            })
        return summaries

    def step(self, summary: dict, length: int, last_token: int | None) -> None:
        """Record the step that predicts position ``length`` (the request holds ``length`` tokens,
        the last of which, ``last_token``, was chosen at the previous step)."""
        log_probs = summary.pop("log_probs")
        line = {"position": length, **{k: _finite(v) for k, v in summary.items()}}
        chosen = self._resolve(length - 1, last_token)
        if chosen is not None:
            line["chosen"] = chosen
        self._write(line)
        self.last = (length, log_probs)

    def finish(self, last_tokens: Sequence[int], length: int | None = None) -> None:
        """The request left the batch holding ``length`` tokens, ending with ``last_tokens``:
        resolve the last step's choice when it is known."""
        if self.last is not None and last_tokens and length is not None:
            chosen = self._resolve(length - 1, last_tokens[-1])
            if chosen is not None:
                self._write({"chosen": chosen})
        self.last = None

    def _resolve(self, position: int, token: int | None) -> dict | None:
        if self.last is None or token is None or self.last[0] != position:
            return None
        log_probs = self.last[1]
        if not 0 <= token < log_probs.shape[0]:
            return None
        logprob = log_probs[token]
        return {"position": position, "token_id": int(token), "logprob": _finite(float(logprob)),
                "rank": int(count_greater(log_probs, logprob))}

    def _write(self, line: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:  # one write per line: never half a step
            f.write(json.dumps(line, allow_nan=False) + "\n")


def _finite(value):
    """JSON has no -inf: masked log-probs are written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_trace(key_or_path: str | os.PathLike, *, directory: str | os.PathLike | None = None,
               token_ids: Sequence[int] | None = None, tokenizer=None) -> Trace:
    """The :class:`~logit_processors.Trace` (one sequence: the generated tokens) of a traced request.

    Args:
        key_or_path: the request's ``logit_processors_trace`` key (looked up in ``directory``,
            default ``$LOGIT_PROCESSORS_TRACE_DIR``) or the path of its ``.jsonl`` file.
        token_ids: the completion's generated token ids (vLLM: ``output.outputs[0].token_ids``;
            OpenAI API: ask for ``"return_token_ids": true``); they resolve the last step's choice
            (exactly when it is among the recorded top-k or an EOS token; else its statistics are
            ``nan`` and its rank ``-1``, as ``LogitGapMonitor`` does).
        tokenizer: to fill in the tokens' strings.
    """
    path = Path(key_or_path)
    if path.suffix != ".jsonl":
        root = directory if directory is not None else os.environ.get(TRACE_DIR_ENV)
        if root is None:
            raise ValueError(f"read_trace({key_or_path!r}): give directory= or set {TRACE_DIR_ENV}, or pass the file's path")
        path = Path(root) / f"{check_trace_key('key', str(key_or_path))}.jsonl"
    header, steps, chosen = _read_lines(path)
    prompt_length, top_k = header["prompt_length"], header["top_k"]
    positions = sorted(steps)
    if token_ids is not None:
        for i, token in enumerate(token_ids):
            chosen.setdefault(prompt_length + i, {"token_id": int(token)})
    if token_ids is not None:
        positions = [p for p in positions if p - prompt_length < len(token_ids)]
    rows = [_resolved(steps[p], chosen.get(p), header["eos_token_ids"]) for p in positions]
    floats = lambda values: torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float32)  # noqa: E731
    top_logprobs = torch.tensor([[-math.inf if v is None else v for v in steps[p]["top_logprobs"]] for p in positions],
                                dtype=torch.float32).reshape(len(positions), top_k)
    top_ids = torch.tensor([steps[p]["top_ids"] for p in positions], dtype=torch.long).reshape(len(positions), top_k)
    stats = assemble_stats(top_logprobs, top_ids, floats([steps[p]["entropy"] for p in positions]),
                           floats([r[1] for r in rows]), torch.tensor([r[2] for r in rows], dtype=torch.long), top_k)
    tokens = torch.tensor([r[0] for r in rows], dtype=torch.long)
    decoder = TokenDecoder(tokenizer) if tokenizer is not None else None
    return Trace([sequence_trace(tokens, torch.tensor(positions, dtype=torch.long), stats, decoder)], top_k=top_k)


def _read_lines(path: Path) -> tuple[dict, dict[int, dict], dict[int, dict]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header, steps, chosen = None, {}, {}
    for number, text in enumerate(lines):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # the engine was stopped mid-write: the last line is incomplete
            raise ValueError(f"{path}:{number + 1}: not a trace line") from None
        if line.get("format") == FORMAT:
            header = line
        if "position" in line and "top_ids" in line:
            steps[line["position"]] = line
        if "chosen" in line:
            chosen[line["chosen"]["position"]] = line["chosen"]
    if header is None:
        raise ValueError(f"{path}: not a {FORMAT} file (no header line)")
    return header, steps, chosen


def _resolved(step: dict, chosen: dict | None, eos: list[int]) -> tuple[int, float | None, int]:
    """``(token id, log-prob, rank)`` of the token chosen at a step: as recorded by the engine, else
    from the step's top-k or EOS statistics, else unknown (``nan``, ``-1``)."""
    if chosen is None:
        return -1, None, -1
    token = chosen["token_id"]
    if "rank" in chosen:
        return token, chosen["logprob"], chosen["rank"]
    if token in step["top_ids"]:
        logprob = step["top_logprobs"][step["top_ids"].index(token)]
        return token, logprob, sum(1 for v in step["top_logprobs"] if v is not None and logprob is not None and v > logprob)
    if token in eos:
        i = eos.index(token)
        return token, step["eos_logprobs"][i], step["eos_ranks"][i]
    return token, None, -1
