"""A real vLLM engine (LLM, the embedded SmolLM2, float32) with our adapter, against Hugging Face
generate() with the same processors built from the same specs.

One engine for the module. Requests are sent as token ids (no second tokenization); the
reference runs the spec through from_spec with the HF tokenizer and generate(), greedy.
"""

from __future__ import annotations

import json

import pytest
import torch

from logit_processors import LogitGapMonitor, PhraseBan, from_spec
from logit_processors.runtime.generation import run_generate
from logit_processors.vllm import read_trace

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
MAX_TOKENS = 24
#: Where vLLM's CPU kernels and HF's disagree, the two top tokens must be a near tie in HF's own
#: processed scores: two float32 implementations of one network (other GEMM blocking, fused
#: attention) agree on logits to ~1e-5 relative per layer, ~1e-3 after 30 layers at |z| ~ 20;
#: a gap below 1e-2 nats is one either may break.
NEAR_TIE = 1e-2


@pytest.fixture(scope="module")
def llm(smollm2_path, engine_settings):
    from vllm import LLM

    engine = LLM(model=smollm2_path, **engine_settings)
    yield engine
    del engine


def specs(tokenizer) -> list[dict]:
    deny = sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in (" the", " a", " Paris", "\n")})
    return [
        {"processors": [{"type": "phrase_ban", "phrases": ["Paris", "the capital", "return"]}]},
        {"processors": [{"type": "token_mask", "deny": deny}, {"type": "temperature", "temperature": 0.7}]},
        {"processors": [{"type": "vocab_filter", "predicate": {"test": "isascii"}}, {"type": "top_k", "k": 5}]},
        {"processors": [{"type": "entropy_temperature", "min_t": 0.5, "max_t": 1.5}, {"type": "min_p", "p": 0.1},
                        {"type": "top_p", "p": 0.9}]},
        None,  # no spec: passes through untouched
    ]


def hf_greedy(model, tokenizer, prompt_ids: list[int], spec: dict | None, monitor=None):
    processors = [] if spec is None else list(from_spec(spec, tokenizer=tokenizer))
    if monitor is not None:
        processors.insert(0, monitor)
    inputs = {"input_ids": torch.tensor([prompt_ids]), "attention_mask": torch.ones(1, len(prompt_ids), dtype=torch.long)}
    out = run_generate(model, inputs, processors, greedy=True, max_new_tokens=MAX_TOKENS, output_scores=True)
    return out.sequences[0, len(prompt_ids):].tolist(), out


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def test_greedy_outputs_and_traces_match_hf(llm, hf_smollm2):
    from vllm import SamplingParams

    model, tokenizer = hf_smollm2
    cases = [(p, s) for p in PROMPTS for s in specs(tokenizer)]
    requests, params = [], []
    for i, (prompt, spec) in enumerate(cases):
        extra = {"logit_processors_trace": f"greedy-{i}"}
        if spec is not None:
            extra["logit_processors"] = spec
        requests.append({"prompt_token_ids": tokenizer(prompt).input_ids})
        params.append(SamplingParams(temperature=0, max_tokens=MAX_TOKENS, extra_args=extra))
    outputs = llm.generate(requests, params, use_tqdm=False)  # one batch: every spec at once
    identical = 0
    for i, ((prompt, spec), output) in enumerate(zip(cases, outputs, strict=True)):
        ours = list(output.outputs[0].token_ids)
        monitor = LogitGapMonitor(tokenizer)
        reference, hf_out = hf_greedy(model, tokenizer, requests[i]["prompt_token_ids"], spec, monitor)
        step = first_divergence(ours, reference)
        if step is None:
            identical += 1
        else:  # only a near tie in HF's own processed scores may go the other way
            scores = hf_out.scores[step][0]
            gap = float(scores[reference[step]] - scores[ours[step]]) if step < min(len(ours), len(reference)) else 0.0
            assert gap < NEAR_TIE, f"{prompt!r} with {json.dumps(spec)}: diverged at step {step} with a gap of {gap}"
        # The trace: the data LogitGapMonitor gives in HF, for the steps both took alike.
        trace = read_trace(f"greedy-{i}", token_ids=ours, tokenizer=tokenizer)
        expected = monitor.trace(hf_out.sequences)
        n = len(reference) if step is None else step
        got, want = trace[0], expected[0]
        assert got.token_ids[:n].tolist() == want.token_ids[:n].tolist()
        assert got.positions[:n].tolist() == want.positions[:n].tolist()
        assert got.rank[:n].tolist() == want.rank[:n].tolist()
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy"):
            torch.testing.assert_close(getattr(got, name)[:n], getattr(want, name)[:n], atol=NEAR_TIE, rtol=1e-3,
                                       equal_nan=True)
    assert identical >= len(cases) - 2, f"only {identical} of {len(cases)} greedy outputs are token-identical to HF"


def test_banned_phrases_never_appear_under_sampling(llm, hf_smollm2):
    from vllm import SamplingParams

    _, tokenizer = hf_smollm2
    phrases = ["Paris", "France", "capital"]
    spec = {"processors": [{"type": "phrase_ban", "phrases": phrases, "case_variants": True},
                           {"type": "temperature", "temperature": 1.3}]}
    banned = PhraseBan(phrases, tokenizer, case_variants=True).sequences
    prompt = tokenizer("The capital of France is").input_ids
    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=32, extra_args={"logit_processors": spec})
              for i in range(16)]
    outputs = llm.generate([{"prompt_token_ids": prompt}] * 16, params, use_tqdm=False)
    for output in outputs:
        tokens = list(output.outputs[0].token_ids)
        history = prompt + tokens
        for seq in banned:  # no banned sequence ends inside the generated tokens
            for end in range(len(prompt), len(history)):
                assert tuple(history[end - len(seq) + 1 : end + 1]) != seq, (output.outputs[0].text, seq)
    texts = [o.outputs[0].text for o in outputs]
    assert len(set(texts)) > 8  # really sampled


def test_sixteen_concurrent_requests_with_different_specs_never_mix(llm, hf_smollm2):
    from vllm import SamplingParams

    _, tokenizer = hf_smollm2
    eos = tokenizer.eos_token_id
    words = [i for i in range(300, 49_000) if tokenizer.decode([i]).strip().isalpha()][: 16 * 64]
    allowed = [sorted(words[r * 64:(r + 1) * 64]) for r in range(16)]  # disjoint vocabularies
    prompt = tokenizer("Write a story about a dragon.").input_ids
    params = []
    for r in range(16):
        steps = [{"type": "token_mask", "allow": allowed[r] + [eos]}]
        if r % 2:  # half also ban the first two tokens their greedy run would take
            steps.insert(0, {"type": "phrase_ban", "token_ids": [allowed[r][:2]]})
        params.append(SamplingParams(temperature=0.8 if r % 3 else 0, seed=r, max_tokens=20,
                                     extra_args={"logit_processors": {"processors": steps}}))
    outputs = llm.generate([{"prompt_token_ids": prompt}] * 16, params, use_tqdm=False)
    for r, output in enumerate(outputs):
        tokens = list(output.outputs[0].token_ids)
        assert tokens and set(tokens) <= set(allowed[r]) | {eos}, f"request {r} got tokens of another request's spec"
        if r % 2:
            assert all(tokens[i:i + 2] != allowed[r][:2] for i in range(len(tokens) - 1))


def test_a_bad_spec_is_refused_alone_and_the_engine_keeps_serving(llm, hf_smollm2):
    from vllm import SamplingParams

    model, tokenizer = hf_smollm2
    prompt = tokenizer(PROMPTS[0]).input_ids
    bad = SamplingParams(max_tokens=4, extra_args={"logit_processors": json.dumps({"type": "top_p", "p": 3})})
    with pytest.raises(Exception, match=r"logit_processors: spec \(top_p\): p must be a number in \[0, 1\]; got 3") as info:
        llm.generate([{"prompt_token_ids": prompt}], bad, use_tqdm=False)
    assert type(info.value).__name__ == "VLLMValidationError"  # vLLM's 400
    oversized = SamplingParams(max_tokens=4, extra_args={"logit_processors": {"type": "phrase_ban", "phrases": ["x"] * 100_000}})
    with pytest.raises(Exception, match="SpecLimits.phrases"):
        llm.generate([{"prompt_token_ids": prompt}], oversized, use_tqdm=False)
    # Admitted (the door has no model to check ids against), refused by the engine: that request ends
    # at once with EOS; the others in its batch are served as usual.
    beyond = SamplingParams(temperature=0, max_tokens=8, extra_args={"logit_processors": {"type": "token_mask", "deny": [60_000]}})
    plain = SamplingParams(temperature=0, max_tokens=8)
    outputs = llm.generate([{"prompt_token_ids": prompt}] * 2, [beyond, plain], use_tqdm=False)
    assert list(outputs[0].outputs[0].token_ids) == [tokenizer.eos_token_id]
    reference, _ = hf_greedy(model, tokenizer, prompt, None)
    assert list(outputs[1].outputs[0].token_ids) == reference[:8]
