"""Gap statistics on a real model: SmolLM2-135M-Instruct, against references computed here.

Every expected number is recomputed in this file, longhand and in float64, from tensors the
library never touched:

* :func:`token_stats` (teacher forcing, a left-padded batch of texts of different lengths)
  against a plain, unpadded ``model(input_ids).logits`` per text;
* :class:`LogitGapMonitor` against what ``generate()`` itself returns for the same run. Which
  returned tensor the monitor saw depends on where ``generate()`` puts custom processors: after
  its own logits processors (none in SmolLM2's generation config) and *before* its sampling
  warpers. Greedy: the monitor is the only processor, so ``output_scores`` are the raw logits.
  Sampling: the monitor sees the raw logits (``output_logits``), not the warped ``output_scores``
  the tokens were drawn from. Beam search: processors get ``log_softmax(logits)`` of each
  running beam (``output_scores``); a monitor row is one running beam's next-token distribution
  (not the accumulated beam score), and ``beam_indices`` says which running beam produced each
  token of a returned sequence. The statistics are shift-invariant, so they are checked against
  the raw ``output_logits`` of that beam.

SmolLM2's vocabulary (49,152) is wide enough for near-ties, so ranks are checked against the
range the float64 reference allows within float32 rounding, not one exact number.
Runtime: one cached model load (~2-4 s) and a few 12-token generations.
"""

from __future__ import annotations

import math

import pytest
import torch
from real_models import require_named_model

from logit_processors import models
from logit_processors.gaps import LogitGapMonitor, Trace, token_stats

pytestmark = pytest.mark.real_model

STATS = ("top_gap", "chosen_gap", "surprisal", "entropy")
TOP_K = 5
NEW_TOKENS = 12
# float32 statistics against a float64 reference on the same logits (|z| <= ~40, V = 49,152):
# a few roundings of eps |z| and a 49,152-term float32 sum (1.5e-5 apart between two CPUs).
ATOL, RTOL = 2e-4, 1e-4
TIE = 1e-4  # log-probs closer than this count as tied when checking ranks
# The same against logits by another forward path of the 30-layer model (a left-padded batch, a
# cached step): float32 logits ~1e-4..1e-3 apart (a top gap 5.5e-4 apart on one CPU in
# notebooks/02), a statistic of two logits (a gap, a surprisal) up to twice that; ties likewise.
PATH_ATOL, PATH_TIE = 2e-3, 2e-3

TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Water boils at",
    "def add(a, b):\n    return a + b",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three primary colours, briefly, in one line please."}],
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy shared machine two OpenMP threads spin-wait for each other and
    made this file 10x slower; one thread keeps it at a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2():
    require_named_model("smollm2")
    model, tokenizer = models.load("smollm2", progress=False)
    assert model.dtype == torch.float32
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Reference: one next-token distribution, longhand in float64


def reference(logits: torch.Tensor, token: int, tie: float = TIE) -> dict:
    """Statistics of ``token`` under one row of raw logits (or any shift of them)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    top = logp.topk(TOP_K)
    chosen = logp[token]
    p = logp.exp()
    return {
        "top_gap": (top.values[0] - top.values[1]).item(),
        "chosen_gap": (top.values[0] - chosen).item(),
        "surprisal": (-chosen).item(),
        "entropy": -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum().item(),
        # Ranks within float32 rounding: tokens surely above, and tokens possibly above (the
        # chosen token itself, which is within TIE of itself, does not count).
        "rank_min": int((logp > chosen + tie).sum()),
        "rank_max": int((logp > chosen - tie).sum()) - 1,
        "top_logprobs": top.values.tolist(),
        "top_ids": top.indices.tolist(),
        "tied_top": bool((top.values[:-1] - top.values[1:] < tie).any()),
    }


def assert_matches(seq, refs: list[dict], offset: int = 0, label: str = "", atol: float = ATOL) -> None:
    """``seq``'s statistics from index ``offset`` on equal ``refs``."""
    assert len(seq) - offset == len(refs), f"{label}: {len(seq) - offset} tokens, reference {len(refs)}"
    for name in STATS:
        expected = torch.tensor([r[name] for r in refs], dtype=torch.float64)
        got = getattr(seq, name)[offset:].double()
        torch.testing.assert_close(got, expected, atol=atol, rtol=RTOL, msg=lambda m, n=name: f"{label} {n}: {m}")
    torch.testing.assert_close(
        seq.top_logprobs[offset:].double(),
        torch.tensor([r["top_logprobs"] for r in refs], dtype=torch.float64),
        atol=atol,
        rtol=RTOL,
    )
    for i, r in enumerate(refs):
        rank = int(seq.rank[offset + i])
        assert r["rank_min"] <= rank <= r["rank_max"], f"{label} token {i}: rank {rank}, reference {r}"
        if not r["tied_top"]:
            assert seq.top_ids[offset + i].tolist() == r["top_ids"], f"{label} token {i}: top ids"


# --------------------------------------------------------------------------------------------
# Teacher forcing


def test_token_stats_equals_plain_forward_pass(smollm2):
    model, tokenizer = smollm2
    ids = [tokenizer(text)["input_ids"] for text in TEXTS]
    assert len({len(i) for i in ids}) == len(TEXTS)  # different lengths: the batch is padded
    trace = token_stats(model, tokenizer, TEXTS, batch_size=len(TEXTS), top_k=TOP_K)
    assert isinstance(trace, Trace) and len(trace) == len(TEXTS)
    for r, (text_ids, seq) in enumerate(zip(ids, trace, strict=True)):
        assert seq.token_ids.tolist() == text_ids
        assert seq.positions.tolist() == list(range(len(text_ids)))
        assert seq.tokens == [tokenizer.decode([t]) for t in text_ids]
        # The first token has no prediction.
        assert all(math.isnan(getattr(seq, name)[0].item()) for name in STATS) and seq.rank[0].item() == -1
        with torch.no_grad():
            logits = model(torch.tensor([text_ids])).logits[0]  # unpadded, on its own
        # Position t - 1 predicts token t.
        refs = [reference(logits[t - 1], text_ids[t], tie=PATH_TIE) for t in range(1, len(text_ids))]
        assert_matches(seq, refs, offset=1, label=f"text {r}", atol=PATH_ATOL)
    records = trace.records()
    assert records[0]["rank"] is None and records[0]["alternatives"] == []
    assert [a["token_id"] for a in records[1]["alternatives"]] == trace[0].top_ids[1].tolist()


# --------------------------------------------------------------------------------------------
# The monitor during generate()


def generate(model, tokenizer, inputs, monitor, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(
            **inputs,
            logits_processor=[monitor],
            max_new_tokens=NEW_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            **kwargs,
        )


def generated_length(generated: list[int], eos: int) -> int:
    """Generated tokens up to and including the first EOS (the rest is padding)."""
    return generated.index(eos) + 1 if eos in generated else len(generated)


def reference_trace(out, prompt_length: int, eos: int, seen, beams: bool = False) -> list[list[dict]]:
    """Per returned sequence, the reference of each generated token from the per-step ``seen``."""
    result = []
    for r, seq in enumerate(out.sequences.tolist()):
        generated = seq[prompt_length:]
        n = generated_length(generated, eos)
        if beams:
            rows = [b for b in out.beam_indices[r].tolist() if b >= 0]
            assert len(rows) == n
        else:
            rows = [r] * n
        result.append([reference(seen[k][rows[k]], generated[k]) for k in range(n)])
    return result


def check_trace(trace: Trace, out, inputs, refs) -> None:
    prompt_length = inputs["input_ids"].shape[1]
    real_lengths = inputs["attention_mask"].sum(-1).tolist()
    per_prompt = out.sequences.shape[0] // len(real_lengths)
    assert len(trace) == out.sequences.shape[0]
    for r, (seq, seq_refs) in enumerate(zip(trace, refs, strict=True)):
        assert_matches(seq, seq_refs, label=f"sequence {r}")
        n = len(seq)
        assert seq.token_ids.tolist() == out.sequences[r, prompt_length : prompt_length + n].tolist()
        start = real_lengths[r // per_prompt]  # positions ignore the left padding
        assert seq.positions.tolist() == list(range(start, start + n))


def test_monitor_greedy_equals_output_scores(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(CHATS[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    monitor = LogitGapMonitor(tokenizer)
    out = generate(model, tokenizer, inputs, monitor, do_sample=False)
    # The monitor is the only processor and hands back the tensor it got: scores are raw logits.
    assert all(s is z for s, z in zip(out.scores, out.logits, strict=True))
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    prompt_length = inputs["input_ids"].shape[1]
    check_trace(trace, out, inputs, reference_trace(out, prompt_length, tokenizer.eos_token_id, out.scores))
    # Greedy takes the top token: rank 0, no gap to the top.
    assert (trace[0].rank == 0).all() and (trace[0].chosen_gap.abs() <= ATOL).all()
    assert "Paris" in "".join(trace[0].tokens)


def test_monitor_sampling_sees_the_raw_logits(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(CHATS[1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    monitor = LogitGapMonitor(tokenizer)
    sampling = {"do_sample": True, "temperature": 1.4, "top_k": 40, "num_return_sequences": 2}
    out = generate(model, tokenizer, inputs, monitor, seed=11, **sampling)
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    prompt_length = inputs["input_ids"].shape[1]
    eos = tokenizer.eos_token_id
    check_trace(trace, out, inputs, reference_trace(out, prompt_length, eos, out.logits))
    # generate()'s warpers (temperature, top-k) ran after the monitor: the warped output_scores
    # the tokens were drawn from are a different distribution from the one the monitor recorded.
    warped = reference_trace(out, prompt_length, eos, out.scores)
    assert abs(warped[0][0]["entropy"] - trace[0].entropy[0].item()) > 0.1
    # At this temperature some token below the top one gets drawn.
    assert any((seq.rank > 0).any() for seq in trace)
    # The same seed gives the same tokens and the same trace.
    again = LogitGapMonitor(tokenizer)
    out_again = generate(model, tokenizer, inputs, again, seed=11, **sampling)
    assert torch.equal(out_again.sequences, out.sequences)
    assert again.trace(out_again).records() == monitor.trace(out).records()


def test_monitor_beam_search_follows_the_beams(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(CHATS[1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    monitor = LogitGapMonitor(tokenizer)
    out = generate(model, tokenizer, inputs, monitor, do_sample=False, num_beams=3, num_return_sequences=3)
    assert out.sequences.shape[0] == 3
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    prompt_length = inputs["input_ids"].shape[1]
    eos = tokenizer.eos_token_id
    # Each token's statistics: the running beam that produced it (beam_indices), its raw logits.
    check_trace(trace, out, inputs, reference_trace(out, prompt_length, eos, out.logits, beams=True))
    # The processors were handed log-probabilities (output_scores): the kept top log-probs are those.
    first_beam = out.beam_indices[0, 0].item()
    torch.testing.assert_close(
        trace[0].top_logprobs[0], out.scores[0][first_beam].topk(TOP_K).values, atol=1e-5, rtol=1e-5
    )
    # Beam search keeps hypotheses that are not the greedy choice at every step.
    assert any((seq.rank > 0).any() for seq in trace)


def test_monitor_left_padded_chat_batch(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(
        CHATS, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    lengths = inputs["attention_mask"].sum(-1).tolist()
    assert lengths[0] != lengths[1] and (inputs["attention_mask"][:, 0] == 0).any()  # left padded
    monitor = LogitGapMonitor(tokenizer)
    out = generate(model, tokenizer, inputs, monitor, do_sample=False)
    trace = monitor.trace(out, attention_mask=inputs["attention_mask"])
    prompt_length = inputs["input_ids"].shape[1]
    eos = tokenizer.eos_token_id
    check_trace(trace, out, inputs, reference_trace(out, prompt_length, eos, out.scores))
    # The teacher-forced path gives the same statistics for the generated tokens (a cached,
    # step-by-step forward against one full forward: equal within float32 noise).
    full_mask = torch.cat([inputs["attention_mask"], torch.ones_like(out.sequences[:, prompt_length:])], dim=1)
    forced = token_stats(model, tokenizer, out.sequences, attention_mask=full_mask)
    for seq, full in zip(trace, forced, strict=True):
        at = {p: i for i, p in enumerate(full.positions.tolist())}
        index = torch.tensor([at[p] for p in seq.positions.tolist()])
        assert full.token_ids[index].tolist() == seq.token_ids.tolist()
        for name in STATS:
            torch.testing.assert_close(getattr(full, name)[index], getattr(seq, name), atol=PATH_ATOL, rtol=RTOL)
