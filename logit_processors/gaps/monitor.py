"""``LogitGapMonitor``: the gap statistics of every ``generate()`` step, recorded on the device."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import numerics
from ..core import Processor, host_reads_are_free, scratch_pair
from ..validate import (
    NanPolicy,
    check_ids_in_range,
    check_nan_policy,
    check_tokenizer,
    describe,
    eos_token_ids,
    per_row,
    positive_int,
)
from .stats import (
    DEFAULT_TOP_K,
    GapStats,
    assemble_stats,
    chosen_stats,
    count_greater,
    entropy_of_log_probs,
    top_candidates,
)
from .trace import TokenDecoder, Trace, sequence_trace


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
    returns the very ``scores`` object it was given and, on an accelerator, never reads tensor
    data back to the host during generation (the input policy's check is read without a sync:
    :mod:`logit_processors.core`): each step's summaries (top ``top_k`` log-probs and ids, entropy) go
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
    :class:`~logit_processors.Chain` it sees what the processors before it produced: put it first to watch the
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
        >>> from logit_processors.models import load_tiny_gpt2
        >>> model, tokenizer = load_tiny_gpt2()
        >>> monitor = LogitGapMonitor(tokenizer)
        >>> inputs = tokenizer(["The if statement"], return_tensors="pt")
        >>> out = model.generate(**inputs, logits_processor=[monitor], max_new_tokens=8,
        ...                      do_sample=False, return_dict_in_generate=True)
        >>> trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
        >>> len(trace[0]), trace[0].rank.tolist() == [0] * len(trace[0])   # greedy: always the top token
        (8, True)

    Thin ``top_gap`` values mark the steps where the model hesitated; a large ``chosen_gap``
    marks a token that sampling (or a constraint) took far from the model's favourite.
    """

    def __init__(self, tokenizer=None, *, eos_token_id: int | Sequence[int] | None = None, top_k: int = DEFAULT_TOP_K,
                 on_nan: NanPolicy = "raise"):
        self.tokenizer = None if tokenizer is None else check_tokenizer("tokenizer", tokenizer, methods=("batch_decode",))
        self.on_nan = check_nan_policy(on_nan)
        self.top_k = positive_int("top_k", top_k)
        if eos_token_id is None and tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            eos_token_id = tokenizer.eos_token_id
        self.eos_token_ids: list[int] = eos_token_ids(eos_token_id)
        self.reset()

    keeps_scores_valid = True  # it returns the very scores it was given, untouched

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
        top_logprobs, top_ids = top_candidates(log_probs, self.top_k)
        entropy = entropy_of_log_probs(log_probs, work)
        if continuing:
            parent, new_start = self._parents(input_ids, last)
            token_in = input_ids[:, -1]
            if host_reads_are_free(token_in.device):  # elsewhere the read would sync at every step
                check_ids_in_range("input_ids", token_in.tolist(), scores.shape[-1])
            previous = torch.index_select(self._last_log_probs, 0, parent, out=work[0])
            in_logprob, in_rank = chosen_stats(previous, token_in, out=previous)
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
                [count_greater(log_probs, eos_logprob[:, e, None], out=work[0]) for e in range(len(self._eos_list))],
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
        decoder = TokenDecoder(tokenizer) if tokenizer is not None else None
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
            traces.append(sequence_trace(token_ids, positions, stats, decoder))
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
        return assemble_stats(top_logprobs, top_ids, entropy, chosen_logprob, rank, self.top_k), count

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
                f"token ids); got {describe(sequences)}"
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
                    f"got {describe(attention_mask)}"
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
