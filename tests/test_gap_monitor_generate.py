"""LogitGapMonitor inside real generate() calls on the tiny GPT-2, and token_stats against it.

The reference for every generated token is recomputed here, in float64, from what generate()
returns: the scores the monitor was handed and, for beam search, ``beam_indices`` (which running
beam produced each token of each returned sequence). Which returned tensor that is depends on
where generate() puts custom processors: after its own logits processors (none for the tiny
GPT-2) but *before* its sampling warpers (temperature, top-k, top-p). So the monitor sees the raw
logits (``output_logits``) when sampling, and, used alone, exactly the final scores
(``output_scores``, which then are the raw logits, or their log-softmax under beam search)
otherwise.
"""

from __future__ import annotations

import pytest
import torch

from logit_processors.gaps import LogitGapMonitor, Trace, token_stats

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

PROMPTS = ["The object is", "A class definition is a statement that", "x"]
STATS = ("top_gap", "chosen_gap", "surprisal", "entropy")


def generate(model, tokenizer, prompts, processors, seed=0, **kwargs):
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            logits_processor=list(processors),
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            **kwargs,
        )
    return out, inputs


# --------------------------------------------------------------------------------------------
# Reference


def reference_token(scores: torch.Tensor, token: int, top_k: int = 5) -> dict:
    """Statistics of one token from one row of scores, in float64, written out longhand."""
    z = scores.double()
    logp = z - torch.logsumexp(z, dim=-1)
    top = logp.sort(descending=True).values[:top_k]
    chosen = logp[token]
    p = logp.exp()
    return {
        "top_gap": (top[0] - top[1]).item(),
        "chosen_gap": (top[0] - chosen).item(),
        "surprisal": (-chosen).item(),
        "entropy": -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum().item(),
        "rank": int((z > z[token]).sum()),  # strictly higher, compared on the scores themselves
        "top_logprobs": top.tolist(),
    }


def expected_length(generated: list[int], eos: int) -> int:
    """Generated tokens up to and including the first EOS (the rest is padding)."""
    return generated.index(eos) + 1 if eos in generated else len(generated)


def reference_trace(out, prompt_length: int, eos: int, beams: bool, seen=None) -> list[list[dict]]:
    """Per returned sequence, the reference statistics of each generated token; ``seen`` are the
    per-step scores the monitor was handed (default ``out.scores``)."""
    seen = out.scores if seen is None else seen
    result = []
    for r, seq in enumerate(out.sequences.tolist()):
        generated = seq[prompt_length:]
        if beams:
            beam_rows = [b for b in out.beam_indices[r].tolist() if b >= 0]
            n = len(beam_rows)
            assert n == expected_length(generated, eos)
        else:
            n = expected_length(generated, eos)
            beam_rows = [r] * n
        result.append([reference_token(seen[k][beam_rows[k]], generated[k]) for k in range(n)])
    return result


def assert_matches_reference(trace: Trace, reference: list[list[dict]], atol=2e-5):
    assert len(trace) == len(reference)
    for r, (seq, refs) in enumerate(zip(trace, reference, strict=True)):
        assert len(seq) == len(refs), f"sequence {r}: {len(seq)} tokens, reference {len(refs)}"
        for name in STATS:
            expected = torch.tensor([ref[name] for ref in refs], dtype=torch.float32)
            torch.testing.assert_close(getattr(seq, name), expected, atol=atol, rtol=1e-5, msg=f"sequence {r} {name}")
        assert seq.rank.tolist() == [ref["rank"] for ref in refs], f"sequence {r} rank"
        expected_top = torch.tensor([ref["top_logprobs"] for ref in refs], dtype=torch.float32).reshape(-1, 5)
        torch.testing.assert_close(seq.top_logprobs, expected_top, atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Monitor trace == statistics recomputed from generate()'s own outputs


def test_greedy(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    out, inputs = generate(model, tokenizer, PROMPTS[:1], [monitor], do_sample=False, max_new_tokens=12)
    # The monitor handed back the very tensor it got: the stored scores are the raw logits.
    assert all(s is logits for s, logits in zip(out.scores, out.logits, strict=True))
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    prompt_length = inputs["input_ids"].shape[1]
    assert_matches_reference(trace, reference_trace(out, prompt_length, tokenizer.eos_token_id, beams=False))
    # Greedy decoding takes the top token: rank 0 and no gap to the top, unless tied.
    assert (trace[0].rank == 0).all() and (trace[0].chosen_gap == 0).all()
    n = len(trace[0])
    assert trace[0].token_ids.tolist() == out.sequences[0, prompt_length : prompt_length + n].tolist()
    assert trace[0].tokens == [tokenizer.decode([t]) for t in trace[0].token_ids.tolist()]
    assert trace[0].positions.tolist() == list(range(prompt_length, prompt_length + n))


def test_sampling_with_seed_and_several_returns(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    out, inputs = generate(
        model,
        tokenizer,
        PROMPTS[:2],
        [monitor],
        seed=7,
        do_sample=True,
        top_k=40,
        temperature=0.9,
        num_return_sequences=3,
        max_new_tokens=15,
    )
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    assert len(trace) == 6
    # generate()'s sampling warpers (temperature, top-k) run *after* custom processors: the
    # monitor saw the model's own distribution, which output_logits holds (output_scores holds
    # the warped scores the tokens were drawn from).
    prompt_length = inputs["input_ids"].shape[1]
    reference = reference_trace(out, prompt_length, tokenizer.eos_token_id, beams=False, seen=out.logits)
    assert_matches_reference(trace, reference)
    warped = reference_trace(out, prompt_length, tokenizer.eos_token_id, beams=False)
    assert warped[0][0]["entropy"] < reference[0][0]["entropy"]
    # Sampling sometimes takes a token below the top one.
    assert any((seq.rank > 0).any() for seq in trace)
    # Same seed, same trace.
    again = LogitGapMonitor(tokenizer)
    generate(
        model,
        tokenizer,
        PROMPTS[:2],
        [again],
        seed=7,
        do_sample=True,
        top_k=40,
        temperature=0.9,
        num_return_sequences=3,
        max_new_tokens=15,
    )
    assert again.trace(out).records() == monitor.trace(out).records()


def test_beam_search_follows_returned_sequences(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    out, inputs = generate(
        model,
        tokenizer,
        PROMPTS[:2],
        [monitor],
        do_sample=False,
        num_beams=4,
        num_return_sequences=2,
        max_new_tokens=12,
    )
    assert out.sequences.shape[0] == 4
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    assert_matches_reference(
        trace, reference_trace(out, inputs["input_ids"].shape[1], tokenizer.eos_token_id, beams=True)
    )
    # Beam search keeps hypotheses that are not the greedy choice at every step.
    assert any((seq.rank > 0).any() for seq in trace)


def test_beam_search_with_early_finished_hypotheses(tiny_gpt2):
    """Hypotheses that end with EOS before the last step: their EOS is resolved exactly."""
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    prompts = ["The", "In"]  # with length_penalty < 0 short hypotheses win: some end early
    out, inputs = generate(
        model,
        tokenizer,
        prompts,
        [monitor],
        do_sample=False,
        num_beams=6,
        num_return_sequences=6,
        max_new_tokens=25,
        length_penalty=-1.0,
    )
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    reference = reference_trace(out, inputs["input_ids"].shape[1], tokenizer.eos_token_id, beams=True)
    assert_matches_reference(trace, reference)
    lengths = [len(seq) for seq in trace]
    if min(lengths) == max(lengths):
        pytest.skip("no hypothesis finished early with this model build")
    assert all(seq.token_ids[-1].item() == tokenizer.eos_token_id for seq in trace if len(seq) < max(lengths))


def test_left_padded_batch(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    out, inputs = generate(model, tokenizer, PROMPTS, [monitor], do_sample=False, max_new_tokens=10)
    prompt_length = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"].sum(-1).unique().numel() == 3  # three different lengths
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    assert_matches_reference(trace, reference_trace(out, prompt_length, tokenizer.eos_token_id, beams=False))
    for seq, real_length in zip(trace, inputs["attention_mask"].sum(-1).tolist(), strict=True):
        assert seq.positions[0].item() == real_length  # positions ignore the left padding
    # Without the mask, leading pad tokens are taken as padding: the same positions here.
    assert [s.positions.tolist() for s in monitor.trace(out)] == [s.positions.tolist() for s in trace]


# --------------------------------------------------------------------------------------------
# Teacher forcing == monitor


def joined(monitor_trace: Trace, forced: Trace) -> tuple[dict, dict]:
    """The teacher-forced statistics at the monitor's (sequence, position) pairs."""
    got, want = {}, {}
    for r, (seq, full) in enumerate(zip(monitor_trace, forced, strict=True)):
        index = {p: i for i, p in enumerate(full.positions.tolist())}
        for k, position in enumerate(seq.positions.tolist()):
            i = index[position]
            assert full.token_ids[i] == seq.token_ids[k]
            for name in (*STATS, "rank"):
                got.setdefault(name, []).append(getattr(seq, name)[k].item())
                want.setdefault(name, []).append(getattr(full, name)[i].item())
            got.setdefault("top_logprobs", []).append(seq.top_logprobs[k].tolist())
            want.setdefault("top_logprobs", []).append(full.top_logprobs[i].tolist())
    return got, want


MODES = {
    "greedy": {"do_sample": False},
    "sampling": {"do_sample": True, "num_return_sequences": 2},  # the monitor sees the raw logits
    "beam": {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_teacher_forced_equals_monitor(tiny_gpt2, mode):
    """The two paths agree (within 1e-4: a cached step-by-step forward vs one full forward)."""
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    out, inputs = generate(model, tokenizer, PROMPTS, [monitor], seed=3, max_new_tokens=10, **MODES[mode])
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    # Prompt + output, with the prompt's padding masked: positions line up with the monitor's.
    mask = inputs["attention_mask"].repeat_interleave(out.sequences.shape[0] // len(PROMPTS), dim=0)
    full_mask = torch.cat([mask, torch.ones_like(out.sequences[:, mask.shape[1] :])], dim=1)
    forced = token_stats(model, tokenizer, out.sequences, attention_mask=full_mask, batch_size=4)
    got, want = joined(trace, forced)
    for name in STATS:
        torch.testing.assert_close(torch.tensor(got[name]), torch.tensor(want[name]), atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(
        torch.tensor(got["top_logprobs"]), torch.tensor(want["top_logprobs"]), atol=1e-4, rtol=1e-4
    )
    assert got["rank"] == want["rank"]
    assert trace.records()[0].keys() == forced.records()[0].keys()  # one schema


def test_token_stats_on_text(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    trace = token_stats(model, tokenizer, PROMPTS, batch_size=2)
    for text, seq in zip(PROMPTS, trace, strict=True):
        ids = tokenizer(text)["input_ids"]
        assert seq.token_ids.tolist() == ids and seq.positions.tolist() == list(range(len(ids)))
        assert seq.tokens == [tokenizer.decode([i]) for i in ids]
        # The first token has no prediction.
        assert torch.isnan(seq.surprisal[0]) and seq.rank[0].item() == -1
        assert torch.isfinite(seq.surprisal[1:]).all() and (seq.rank[1:] >= 0).all()
    records = trace.records()
    assert records[0]["rank"] is None and records[0]["alternatives"] == []
    assert len(records[1]["alternatives"]) == 5
    # Batching (and hence padding) does not change the statistics; single strings work.
    alone = token_stats(model, tokenizer, PROMPTS[1])
    torch.testing.assert_close(alone[0].surprisal, trace[1].surprisal, equal_nan=True, atol=1e-5, rtol=1e-5)
    # A plain forward pass, computed independently.
    ids = torch.tensor([tokenizer(PROMPTS[1])["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    for t in range(1, ids.shape[1]):
        ref = reference_token(logits[t - 1], ids[0, t].item())
        for name in STATS:
            assert abs(getattr(trace[1], name)[t].item() - ref[name]) < 1e-4, (t, name)
        assert trace[1].rank[t].item() == ref["rank"]


def test_token_stats_accepts_id_lists_and_padded_head(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    assert model.config.vocab_size > len(tokenizer)  # the LM head is wider than the tokenizer
    ids = [tokenizer("The object is")["input_ids"], [5, 6]]
    trace = token_stats(model, None, ids)
    assert trace[0].tokens is None and trace[1].token_ids.tolist() == [5, 6]
    # Columns beyond the tokenizer may appear as alternatives; they decode to None.
    with_tokenizer = token_stats(model, tokenizer, ids)
    width = model.config.vocab_size
    assert (with_tokenizer[0].top_ids < width).all()
    with pytest.raises(ValueError, match="text_or_texts"):
        token_stats(model, tokenizer, [])
    with pytest.raises(ValueError, match="attention_mask"):
        token_stats(model, tokenizer, torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))


# --------------------------------------------------------------------------------------------
# The contract in a real generate(): scores untouched, no host round trips, reuse


class Guarded:
    """Calls the monitor with host round trips made impossible, and checks it changes nothing."""

    FORBIDDEN = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")

    def __init__(self, monitor):
        self.monitor = monitor
        self.calls = 0

    def __call__(self, input_ids, scores):
        before = scores.clone()
        saved = {name: getattr(torch.Tensor, name) for name in self.FORBIDDEN}

        def forbidden(*args, **kwargs):
            raise AssertionError("LogitGapMonitor read a tensor back to the host during generate()")

        try:
            for name in self.FORBIDDEN:
                setattr(torch.Tensor, name, forbidden)
            result = self.monitor(input_ids, scores)
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)
        assert result is scores and torch.equal(scores, before)
        self.calls += 1
        return result


@pytest.mark.parametrize(
    "kwargs", [{"do_sample": False}, {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}]
)
def test_scores_unchanged_and_no_host_round_trip(tiny_gpt2, kwargs, deferred_checks):
    model, tokenizer = tiny_gpt2
    monitor = LogitGapMonitor(tokenizer)
    guarded = Guarded(monitor)
    out, _ = generate(model, tokenizer, PROMPTS[:2], [guarded], max_new_tokens=8, **kwargs)
    assert guarded.calls == len(out.scores) > 0
    assert len(monitor.trace(out)) == out.sequences.shape[0]


def test_reuse_across_generate_calls(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    shared = LogitGapMonitor(tokenizer)

    def run(prompts, **kwargs):
        out, _ = generate(model, tokenizer, prompts, [shared], max_new_tokens=6, **kwargs)
        trace = shared.trace(out)
        fresh = LogitGapMonitor(tokenizer)
        generate(model, tokenizer, prompts, [fresh], max_new_tokens=6, **kwargs)
        assert trace.records() == fresh.trace(out).records()
        return out

    first = run(PROMPTS[:2], do_sample=False)
    run(PROMPTS[1:], do_sample=False, num_beams=2)  # same rows count, new prompts, beams
    run(PROMPTS, do_sample=False)
    # A second call whose shape looks exactly like the next step of the first (same rows,
    # length previous + 1) but whose prompt is new: detected from the content of input_ids.
    shared.reset()
    out_a, _ = generate(model, tokenizer, PROMPTS[:2], [shared], do_sample=False, max_new_tokens=5)
    last_length = out_a.sequences.shape[1] - 1  # length of the last step's input_ids
    new_prompt = torch.randint(1, len(tokenizer), (2, last_length + 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_b = model.generate(
            input_ids=new_prompt,
            attention_mask=torch.ones_like(new_prompt),
            logits_processor=[shared],
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=tokenizer.pad_token_id,
        )
    fresh = LogitGapMonitor(tokenizer)
    with torch.no_grad():
        model.generate(
            input_ids=new_prompt,
            attention_mask=torch.ones_like(new_prompt),
            logits_processor=[fresh],
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=tokenizer.pad_token_id,
        )
    assert shared.trace(out_b).records() == fresh.trace(out_b).records()
    # The first call's output no longer matches what the monitor holds.
    with pytest.raises(ValueError, match="does not come from"):
        shared.trace(first)
