"""The vLLM adapters' shared core, without vLLM: reading a request's arguments, processing a batch
by spec groups (equal, row for row, to each request's chain on its own history), ending a request
whose processors fail instead of failing the batch, and gap traces equal to LogitGapMonitor's."""

from __future__ import annotations

import pytest
import torch

from logit_processors import LogitGapMonitor, from_spec
from logit_processors.spec import SpecError
from logit_processors.vllm import BatchProcessors, TraceSink, read_request, read_trace

V = 2112  # the tiny GPT-2's LM head


def test_read_request():
    assert read_request(None) is None and read_request({"session_id": "x"}) is None
    args = read_request({"logit_processors": '{"type": "top_k", "k": 3}'})
    assert args.spec == {"processors": [{"type": "top_k", "k": 3}]} and args.trace_key is None
    assert args.group == read_request({"logit_processors": [{"k": 3, "type": "top_k"}]}).group
    with pytest.raises(SpecError, match=r"logit_processors: processors\[0\] \(temperature\).temperature: values per batch row"):
        read_request({"logit_processors": {"type": "temperature", "temperature": [0.5, 1.0]}})
    with pytest.raises(SpecError, match=r"processors\[0\] \(token_mask\).allow: values per batch row"):
        read_request({"logit_processors": [{"type": "token_mask", "allow": [[1], [2]], "vocab_size": 8}]})
    with pytest.raises(ValueError, match="keeps no gap traces; start it with LOGIT_PROCESSORS_TRACE_DIR"):
        read_request({"logit_processors_trace": "abc"})
    with pytest.raises(ValueError, match="logit_processors_trace must be a key"):
        read_request({"logit_processors_trace": "../etc/passwd"}, TraceSink("/tmp"))


def batch(tokenizer, sink=None) -> BatchProcessors:
    return BatchProcessors(V, lambda: tokenizer, [tokenizer.eos_token_id], sink)


def history_of(tokens: list[int]):
    return (lambda n: tokens[len(tokens) - n:] if n else []), (lambda: len(tokens))


SPECS = [
    {"processors": [{"type": "phrase_ban", "phrases": ["the if statement"]}, {"type": "top_k", "k": 40}]},
    {"processors": [{"type": "phrase_ban", "token_ids": [[5, 6, 7], [9]]}, {"type": "temperature", "temperature": 0.5},
                    {"type": "top_p", "p": 0.8}]},
]


def test_rows_grouped_by_spec_equal_each_request_alone(tiny_gpt2):
    _, tokenizer = tiny_gpt2
    processors = batch(tokenizer)
    generator = torch.Generator().manual_seed(0)
    histories, specs = {}, {}
    for handle in range(12):
        tokens = torch.randint(3, 12, (6,), generator=generator).tolist()
        if handle % 4 == 0:
            tokens += tokenizer.encode(" the if", add_special_tokens=False)
        histories[handle] = tokens
        specs[handle] = None if handle % 3 == 2 else SPECS[handle % 2]
        extra = None if specs[handle] is None else {"logit_processors": specs[handle]}
        assert processors.add(handle, extra, *history_of(tokens)) == (specs[handle] is not None)
    logits = torch.randn(12, V, generator=generator)
    rows = [(row, handle) for row, handle in zip(range(12), reversed(range(12)))]  # rows in another order
    got = processors.apply(logits.clone(), rows)
    for row, handle in rows:
        expected = logits[row]
        if specs[handle] is not None:
            chain = from_spec(specs[handle], tokenizer=tokenizer)
            expected = chain(torch.tensor([histories[handle]]), logits[row:row + 1].clone())[0]
        assert torch.equal(got[row], expected), handle
    assert len(processors.chains) == 2  # one chain per distinct spec, whatever the number of requests


def test_a_failing_request_ends_alone(tiny_gpt2):
    _, tokenizer = tiny_gpt2
    processors = batch(tokenizer)
    processors.add(0, {"logit_processors": {"type": "token_mask", "deny": [V + 5]}}, *history_of([1, 2]))  # beyond V
    processors.add(1, {"logit_processors": {"type": "token_mask", "allow": [7]}}, *history_of([1, 2]))
    processors.add(2, {"logit_processors": {"type": "top_k", "k": 2}}, *history_of([1, 2]))
    assert processors.requests[0].failed and "outside" in processors.requests[0].failed
    logits = torch.randn(3, V)
    logits[1, 7] = float("-inf")  # request 1's only allowed token is masked by now: its chain raises
    out = processors.apply(logits.clone(), [(0, 0), (1, 1), (2, 2)])
    eos = tokenizer.eos_token_id
    for row in (0, 1):
        assert out[row, eos] == 0 and torch.isinf(out[row]).sum() == V - 1
    assert torch.equal(out[2], from_spec({"type": "top_k", "k": 2})(torch.zeros(1, 1, dtype=torch.long), logits[2:3])[0])


def test_the_trace_is_the_monitors(tiny_gpt2, tmp_path):
    _, tokenizer = tiny_gpt2
    processors = batch(tokenizer, TraceSink(tmp_path))
    prompt = [4, 8, 15, 16]
    tokens = list(prompt)
    processors.add(3, {"logit_processors_trace": "req-1", "logit_processors": {"type": "top_k", "k": 50}},
                   *history_of(tokens), prompt_length=len(prompt))
    monitor = LogitGapMonitor(tokenizer)
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):
        logits = torch.randn(1, V, generator=generator) * 3
        monitor(torch.tensor([tokens]), logits.clone())
        out = processors.apply(logits.clone(), [(0, 3)])
        tokens.append(int(torch.multinomial(torch.softmax(out[0], -1), 1, generator=generator)))
    processors.remove(3)  # leaving the batch resolves the last step's token
    expected = monitor.trace(torch.tensor([tokens]))[0]
    for got in (read_trace("req-1", directory=tmp_path, tokenizer=tokenizer)[0],
                read_trace(tmp_path / "req-1.jsonl", token_ids=tokens[len(prompt):])[0]):
        assert got.token_ids.tolist() == expected.token_ids.tolist()
        assert got.positions.tolist() == expected.positions.tolist()
        assert got.rank.tolist() == expected.rank.tolist()
        assert torch.equal(got.top_ids, expected.top_ids)
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "top_logprobs"):
            torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-6)
