"""What the vLLM adapters share, with no vLLM in it: reading a request's arguments, and applying
every request's processors to a batch of logits rows in a few tensor operations.

A request asks for processors with ``extra_args["logit_processors"]`` (a spec, see
:mod:`logit_processors.spec`; over HTTP ``"vllm_xargs": {"logit_processors": ...}``) and for its
gap trace with ``extra_args["logit_processors_trace"]`` (a key, see :mod:`.traces`). A request
with neither passes through untouched.

:class:`BatchProcessors` keeps one built chain per distinct spec (so 16 requests with the same
spec share one ``PhraseBan`` automaton) and, per step, one call of that chain on all its rows at
once: rows are grouped by spec, gathered with one ``index_select``, processed, and written back
with one ``index_copy_``. A Python loop runs over the groups, never over rows and vocabulary.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..numerics import NEG_INF
from ..processors import PhraseBan, Temperature, TokenMask
from ..spec import SpecError, check_spec, from_spec
from .traces import TraceRecorder, TraceSink, check_trace_key

logger = logging.getLogger("logit_processors.vllm")

#: ``SamplingParams.extra_args`` keys (over HTTP: the keys of ``"vllm_xargs"``).
SPEC_KEY = "logit_processors"
TRACE_KEY = "logit_processors_trace"


@dataclass(frozen=True)
class RequestArgs:
    """One request's arguments: its spec (checked, as ``{"processors": [...]}``) and the key of
    its gap trace, each ``None`` when not asked for. ``group`` identifies the spec (its canonical
    JSON): requests with equal groups share one built chain."""

    spec: dict | None
    trace_key: str | None

    @property
    def group(self) -> str | None:
        return None if self.spec is None else json.dumps(self.spec, sort_keys=True, separators=(",", ":"))


def read_request(extra_args: dict | None, sink: TraceSink | None = None) -> RequestArgs | None:
    """A request's arguments, checked (``ValueError`` naming the field, for vLLM to turn into a
    400 for this request alone); ``None`` for a request that asks for nothing of ours.

    Beyond :func:`~logit_processors.spec.check_spec`: values per batch row (a temperature list,
    per-row masks) are refused, since a vLLM request is its own batch; and a trace needs a
    sink (``LOGIT_PROCESSORS_TRACE_DIR``) on the server.

    Example:
        >>> read_request({"logit_processors": [{"type": "top_k", "k": 5}]}).spec
        {'processors': [{'type': 'top_k', 'k': 5}]}
        >>> read_request({"other": 1}) is None
        True
    """
    if not extra_args or (SPEC_KEY not in extra_args and TRACE_KEY not in extra_args):
        return None
    spec = None
    if extra_args.get(SPEC_KEY) is not None:
        try:
            spec = check_spec(extra_args[SPEC_KEY])
        except SpecError as error:
            raise SpecError(f"{SPEC_KEY}: {error.field}", str(error).split(": ", 1)[1]) from error
        for i, step in enumerate(spec["processors"]):
            per_row = [name for name, value in step.items() if name in ("temperature", "allow", "deny")
                       and isinstance(value, list) and (name == "temperature" or any(isinstance(v, list) for v in value))]
            if per_row:
                raise SpecError(f"{SPEC_KEY}: processors[{i}] ({step['type']}).{per_row[0]}",
                                "values per batch row have no meaning in vLLM, where each request is its own batch: "
                                "give one value, and send requests that differ as separate requests")
    trace_key = extra_args.get(TRACE_KEY)
    if trace_key is not None:
        check_trace_key(TRACE_KEY, trace_key)
        if sink is None:
            raise ValueError(f"{TRACE_KEY}: this server keeps no gap traces; start it with LOGIT_PROCESSORS_TRACE_DIR set "
                             "to a directory (the trace of each request is written there as KEY.jsonl)")
    return RequestArgs(spec, trace_key)


@dataclass
class RequestEntry:
    """One running request, as the engine sees it: its group, its chain, how to read its recent
    tokens, and its trace recorder (``None`` when not traced). ``failed`` holds the reason when its
    processors could not run: the request is then ended (EOS only) rather than served unprocessed."""

    group: str | None
    chain: tuple[object, int] | None  # (chain, the history window it needs)
    history: Callable[[int], list[int]]
    length: Callable[[], int]
    trace: TraceRecorder | None = None
    failed: str | None = None


class BatchProcessors:
    """The engine side, shared by both adapters: requests by handle (a batch row in the V1
    interface, a slot in V2), chains by spec, and :meth:`apply` on a batch of logits.

    Args:
        vocab_size: the logits' width.
        tokenizer: a zero-argument function returning the model's tokenizer (loaded on first use:
            only specs that hold text need it).
        eos_token_ids: where a request whose processors fail is sent (its end).
        trace_sink: where gap traces go (``None``: no traces).
        max_chains: built chains kept for reuse (least recently used dropped first).
    """

    def __init__(self, vocab_size: int, tokenizer: Callable[[], object], eos_token_ids: Sequence[int],
                 trace_sink: TraceSink | None = None, max_chains: int = 256):
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        self.trace_sink = trace_sink
        self.max_chains = max_chains
        self.chains: OrderedDict[str, tuple[object, int]] = OrderedDict()  # group -> (chain, history window)
        self.requests: dict[int, RequestEntry] = {}

    # -- requests joining and leaving -------------------------------------------------------

    def add(self, handle: int, extra_args: dict | None, history: Callable[[int], list[int]],
            length: Callable[[], int], prompt_length: int = 0) -> bool:
        """Register the request now at ``handle`` (replacing whatever was there); ``history(n)``
        returns its last ``n`` tokens (prompt and output), ``length()`` how many it holds. Returns
        whether it needs us."""
        self.remove(handle)
        try:
            args = read_request(extra_args, self.trace_sink)
        except ValueError as error:  # admission checked it already; a request that gets here anyway is ended
            args, failure = None, str(error)
        else:
            failure = None
        if args is None and failure is None:
            return False
        entry = RequestEntry(group=None if args is None else args.group, chain=None, history=history, length=length,
                             failed=failure)
        if args is not None and args.spec is not None and failure is None:
            try:
                entry.chain = self.chain(entry.group, args.spec)
            except (ValueError, TypeError) as error:
                entry.failed = f"{SPEC_KEY}: {error}"
        if args is not None and args.trace_key is not None:
            entry.trace = self.trace_sink.recorder(args.trace_key, prompt_length, self.eos_token_ids)
        if entry.failed:
            logger.error("logit_processors: ending a request whose processors cannot run: %s", entry.failed)
        self.requests[handle] = entry
        return True

    def remove(self, handle: int) -> None:
        entry = self.requests.pop(handle, None)
        if entry is not None and entry.trace is not None:
            entry.trace.finish(entry.history(1), entry.length())

    def move(self, source: int, target: int, swap: bool) -> None:
        """A request moved from batch row ``source`` to ``target`` (or the two swapped)."""
        a, b = self.requests.pop(source, None), self.requests.pop(target, None)
        if a is not None:
            self.requests[target] = a
        if swap and b is not None:
            self.requests[source] = b

    def chain(self, group: str, spec: dict) -> tuple[object, int]:
        """The chain for a spec, built once (bound to the tokenizer) and checked on one row of this
        model's width, so that what only the model can refuse (an id beyond its vocabulary, a
        calibration of another model) fails here, at admission to the batch, not mid-step."""
        cached = self.chains.get(group)
        if cached is not None:
            self.chains.move_to_end(group)
            return cached
        chain = from_spec(spec, tokenizer=self.tokenizer())
        window = max([1] + [p.history_window for p in chain if isinstance(p, PhraseBan)])
        chain(torch.zeros(1, window, dtype=torch.long), torch.zeros(1, self.vocab_size))
        self.chains[group] = (chain, window)
        if len(self.chains) > self.max_chains:
            self.chains.popitem(last=False)
        return chain, window

    # -- the step ---------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, rows: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Apply every request's processors to ``logits [rows, V]`` in place; ``rows`` lists
        ``(row, handle)`` for the rows to look at (rows of requests we do not know are skipped)."""
        groups: dict[str | None, list[tuple[int, RequestEntry]]] = {}
        traced: list[tuple[int, RequestEntry]] = []
        for row, handle in rows:
            entry = self.requests.get(handle)
            if entry is None:
                continue
            if entry.trace is not None:
                traced.append((row, entry))
            groups.setdefault(entry.group if not entry.failed else "\0failed", []).append((row, entry))
        if traced:  # the model's distribution, as this adapter receives it (before the request's processors)
            self._record(logits, traced)
        for group, members in groups.items():
            if group == "\0failed":
                self._end(logits, [row for row, _ in members])
            elif group is not None:
                self._run_group(logits, members)
        return logits

    def _run_group(self, logits: torch.Tensor, members: list[tuple[int, RequestEntry]]) -> None:
        chain, window = members[0][1].chain
        index = torch.tensor([row for row, _ in members], device=logits.device)
        histories = [entry.history(window) for _, entry in members]
        ids = torch.tensor([[-1] * (window - len(h)) + h for h in histories], dtype=torch.long, device=logits.device)
        try:
            out = chain(ids, logits.index_select(0, index))
        except (ValueError, TypeError) as error:  # e.g. every token masked: end these requests, keep serving
            logger.error("logit_processors: ending %d request(s) whose processors failed: %s", len(members), error)
            for _, entry in members:
                entry.failed = str(error)
            self._end(logits, index.tolist())
            return
        logits.index_copy_(0, index, out.to(logits.dtype))

    def _end(self, logits: torch.Tensor, rows: list[int]) -> None:
        """Only EOS left for these rows: their requests end at this step."""
        index = torch.tensor(rows, device=logits.device)
        logits.index_fill_(0, index, NEG_INF)
        eos = torch.tensor(self.eos_token_ids, device=logits.device)
        logits[index[:, None], eos[None, :]] = 0.0

    def _record(self, logits: torch.Tensor, traced: list[tuple[int, RequestEntry]]) -> None:
        index = torch.tensor([row for row, _ in traced], device=logits.device)
        steps = TraceRecorder.summarize(logits.index_select(0, index), [e.trace for _, e in traced])
        for (_, entry), step in zip(traced, steps, strict=True):
            last = entry.history(1)
            entry.trace.step(step, entry.length(), last[-1] if last else None)
