"""Unit tests for logit_processors.gaps on random tensors.

Every statistic is checked against an independent reference: a plain Python loop in float64
over one row of logits. The monitor is driven by hand (no model) through greedy-like and
beam-like histories, where the true lineage of every row is known.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import numerics
from logit_processors.gaps import DEFAULT_TOP_K, GapStats, LogitGapMonitor, SequenceTrace, Trace, gap_stats

INF = math.inf


# --------------------------------------------------------------------------------------------
# Independent reference: one row, Python floats in float64.


def reference_row(row: list[float], chosen: int | None, top_k: int = DEFAULT_TOP_K) -> dict:
    finite = [x for x in row if x != -INF]
    if finite:
        m = max(finite)
        lse = m + math.log(sum(math.exp(x - m) for x in finite))
        logp = [x - lse if x != -INF else -INF for x in row]
    else:
        logp = [-INF] * len(row)
    ordered = sorted(logp, reverse=True) + [-INF] * max(2, top_k)
    top1, top2 = ordered[0], ordered[1]
    top_gap = top1 - top2 if not (top1 == -INF and top2 == -INF) else math.nan
    entropy = -sum(math.exp(lp) * lp for lp in logp if lp != -INF)
    out = {"top_gap": top_gap, "entropy": entropy, "top_logprobs": ordered[:top_k]}
    if chosen is not None:
        c = logp[chosen]
        out["surprisal"] = -c
        out["chosen_gap"] = top1 - c if not (top1 == -INF and c == -INF) else math.nan
        # Strictly higher *logits* (compared before any arithmetic): ties share a rank.
        out["rank"] = sum(1 for x in row if x > row[chosen])
    return out


def assert_close(actual: float, expected: float, tol: float = 1e-5, what: str = "") -> None:
    if math.isnan(expected):
        assert math.isnan(actual), f"{what}: expected nan, got {actual}"
    elif math.isinf(expected):
        assert actual == expected, f"{what}: expected {expected}, got {actual}"
    else:
        assert abs(actual - expected) <= tol * max(1.0, abs(expected)), f"{what}: {actual} vs {expected}"


def check_against_reference(scores: torch.Tensor, chosen: torch.Tensor, stats: GapStats, top_k: int, tol=1e-5):
    rows = scores.reshape(-1, scores.shape[-1]).double().tolist()
    chosen_flat = chosen.reshape(-1).tolist()
    flat = {
        name: getattr(stats, name).reshape(-1).tolist()
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "rank")
    }
    top_lp = stats.top_logprobs.reshape(-1, top_k)
    top_ids = stats.top_ids.reshape(-1, top_k)
    for i, (row, c) in enumerate(zip(rows, chosen_flat, strict=True)):
        ref = reference_row(row, c, top_k)
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy"):
            assert_close(flat[name][i], ref[name], tol, f"row {i} {name}")
        assert flat["rank"][i] == ref["rank"], f"row {i} rank"
        for j in range(top_k):
            assert_close(top_lp[i, j].item(), ref["top_logprobs"][j], tol, f"row {i} top_logprobs[{j}]")
        # The ids name the tokens whose log-probs are listed (any order among ties).
        ids = [t for t in top_ids[i].tolist() if t >= 0]
        assert len(set(ids)) == len(ids)
        logp = numerics.log_softmax(scores.reshape(-1, scores.shape[-1])[i])
        for j, t in enumerate(ids):
            assert_close(logp[t].item(), top_lp[i, j].item(), 1e-6, f"row {i} top_ids[{j}]")


# --------------------------------------------------------------------------------------------
# gap_stats against the reference


@pytest.mark.parametrize("shape", [(4, 50), (2, 3, 17), (1, 2)])
def test_random_logits_match_reference(shape):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(*shape, generator=g) * 3
    chosen = torch.randint(0, shape[-1], shape[:-1], generator=g)
    stats = gap_stats(scores, chosen, top_k=5)
    assert stats.top_ids.shape == (*shape[:-1], 5)
    check_against_reference(scores, chosen, stats, 5)


def test_ties_share_rank_and_top_gap_zero():
    scores = torch.tensor([[2.0, 2.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    chosen = torch.tensor([3, 2])
    stats = gap_stats(scores, chosen, top_k=3)
    assert stats.rank.tolist() == [0, 0]
    assert stats.top_gap.tolist() == [0.0, 0.0]
    assert stats.chosen_gap.tolist() == [0.0, 0.0]
    check_against_reference(scores, chosen, stats, 3)
    # A token below a tie of two counts both.
    assert gap_stats(scores, torch.tensor([2, 0])).rank.tolist() == [3, 0]


def test_masked_entries():
    scores = torch.tensor(
        [
            [1.0, -INF, 0.5, -INF],  # ordinary masked entries
            [-INF, 3.0, -INF, -INF],  # one token left: top gap is infinite
            [-INF, -INF, -INF, -INF],  # fully masked: defined, never an exception
        ]
    )
    chosen = torch.tensor([1, 1, 0])
    stats = gap_stats(scores, chosen, top_k=3)
    # A chosen token at -inf: infinite surprisal and gap; every unmasked token outranks it.
    assert stats.surprisal[0].item() == INF and stats.chosen_gap[0].item() == INF
    assert stats.rank[0].item() == 2
    assert stats.top_gap[1].item() == INF and stats.surprisal[1].item() == 0.0 and stats.entropy[1].item() == 0.0
    assert math.isnan(stats.top_gap[2].item()) and math.isnan(stats.chosen_gap[2].item())
    assert stats.entropy[2].item() == 0.0 and stats.surprisal[2].item() == INF and stats.rank[2].item() == 0
    check_against_reference(scores, chosen, stats, 3)
    # Fewer unmasked tokens than top_k: the ids of masked alternatives still name real columns
    # or -1, and their log-probs are -inf.
    assert stats.top_logprobs[1, 1:].tolist() == [-INF, -INF]


@given(
    rows=st.integers(1, 4),
    vocab=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    masked_fraction=st.sampled_from([0.0, 0.3, 0.9]),
    tie_levels=st.sampled_from([None, 3]),
)
def test_property_matches_reference(rows, vocab, seed, masked_fraction, tie_levels):
    g = torch.Generator().manual_seed(seed)
    if tie_levels is None:
        scores = torch.randn(rows, vocab, generator=g) * 4
    else:  # few distinct values: many ties
        scores = torch.randint(0, tie_levels, (rows, vocab), generator=g).float()
    scores = scores.masked_fill(torch.rand(rows, vocab, generator=g) < masked_fraction, -INF)
    chosen = torch.randint(0, vocab, (rows,), generator=g)
    check_against_reference(scores, chosen, gap_stats(scores, chosen, top_k=4), 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    scores = (torch.randn(3, 64, generator=g) * 8).to(dtype)
    scores[0, 5] = -INF
    chosen = torch.tensor([5, 7, 9])
    stats = gap_stats(scores, chosen)
    for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "top_logprobs"):
        assert getattr(stats, name).dtype == torch.float32, name
    # The reference sees the same (exactly representable) half-precision values.
    check_against_reference(scores.float(), chosen, stats, DEFAULT_TOP_K)
    # Large half-precision logits whose exp would overflow float16.
    big = torch.full((1, 4), 60000.0, dtype=torch.float16)
    big[0, 0] = 65504.0
    big_stats = gap_stats(big, torch.tensor([1]))
    assert torch.isfinite(big_stats.entropy).all() and torch.isfinite(big_stats.surprisal).all()


@given(seed=st.integers(0, 2**16), vocab=st.integers(2, 30))
def test_every_statistic_is_shift_invariant(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    # Multiples of 1/8 with integer shifts: the shifted values are exact, so ties stay ties.
    scores = torch.randint(-40, 40, (3, vocab), generator=g).float() / 8
    scores[0, 0] = -INF
    chosen = torch.randint(0, vocab, (3,), generator=g)
    shifts = torch.randint(-1000, 1000, (3, 1), generator=g).float()
    base = gap_stats(scores, chosen)
    for shifted in (scores + shifts, numerics.log_softmax(scores)):  # per-row shifts; beam-search log-probs
        other = gap_stats(shifted, chosen)
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "top_logprobs"):
            torch.testing.assert_close(getattr(other, name), getattr(base, name), atol=1e-4, rtol=1e-5, equal_nan=True)
        assert torch.equal(other.rank, base.rank)


def test_padded_lm_head_columns_are_ordinary_columns():
    scores = torch.zeros(1, 8)
    scores[0, 7] = 5.0  # a column beyond a 6-token tokenizer wins
    stats = gap_stats(scores, torch.tensor([0]))
    assert stats.top_ids[0, 0].item() == 7 and stats.rank.item() == 1


def test_without_chosen_tokens():
    stats = gap_stats(torch.randn(2, 5))
    assert torch.isnan(stats.surprisal).all() and torch.isnan(stats.chosen_gap).all()
    assert stats.rank.tolist() == [-1, -1]
    assert torch.isfinite(stats.top_gap).all()


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="scores"):
        gap_stats(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="chosen has shape"):
        gap_stats(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"chosen contains token ids \[3\]"):
        gap_stats(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="chosen must be an integer tensor"):
        gap_stats(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="top_k"):
        gap_stats(torch.zeros(2, 3), top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        LogitGapMonitor(top_k=-1)
    with pytest.raises(ValueError, match="eos_token_id"):
        LogitGapMonitor(eos_token_id=[-2])


# --------------------------------------------------------------------------------------------
# Trace: records, JSON, pandas


def small_trace() -> Trace:
    scores = torch.tensor([[2.0, 1.0, -INF, 0.0], [0.0, 0.0, 0.0, -INF]])
    stats = gap_stats(scores, torch.tensor([1, 2]), top_k=3)
    nan = torch.tensor([math.nan])
    seq = SequenceTrace(
        token_ids=torch.tensor([3, 1, 2]),
        positions=torch.tensor([0, 1, 2]),
        top_gap=torch.cat([nan, stats.top_gap]),
        chosen_gap=torch.cat([nan, stats.chosen_gap]),
        surprisal=torch.cat([nan, stats.surprisal]),
        entropy=torch.cat([nan, stats.entropy]),
        rank=torch.cat([torch.tensor([-1]), stats.rank]),
        top_ids=torch.cat([torch.full((1, 3), -1), stats.top_ids]),
        top_logprobs=torch.cat([torch.full((1, 3), -INF), stats.top_logprobs]),
        tokens=["<s>", "b", "c"],
        top_tokens=[[None] * 3, ["a", "b", "d"], ["a", "b", "c"]],
    )
    return Trace([seq], top_k=3)


def test_records_schema():
    records = small_trace().records()
    assert [r["position"] for r in records] == [0, 1, 2]
    first, second = records[0], records[1]
    assert set(first) == {
        "sequence",
        "position",
        "token_id",
        "token",
        "top_gap",
        "chosen_gap",
        "surprisal",
        "entropy",
        "rank",
        "alternatives",
    }
    assert first["rank"] is None and first["alternatives"] == [] and math.isnan(first["surprisal"])
    assert second["token"] == "b" and second["rank"] == 1
    # Masked alternatives (log-prob -inf) are left out.
    assert [a["token_id"] for a in second["alternatives"]] == [0, 1, 3]
    assert [a["token"] for a in second["alternatives"]] == ["a", "b", "d"]


def test_json_is_strict_and_round_trips(tmp_path):
    trace = small_trace()
    # Make one statistic infinite to exercise the encoding.
    trace[0].chosen_gap[2] = INF
    text = trace.to_json()

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(text, parse_constant=reject)
    assert document["format"] == "logit_processors.gaps.Trace" and document["top_k"] == 3
    first = document["sequences"][0]["records"][0]
    assert first["surprisal"] is None
    assert document["sequences"][0]["records"][2]["chosen_gap"] == "inf"

    path = tmp_path / "trace.json"
    trace.save_json(path)
    again = Trace.load_json(path)
    assert again.records() == trace.records() or _records_equal(again.records(), trace.records())
    with pytest.raises(ValueError, match="format"):
        Trace.from_json('{"format": "something else"}')


def _records_equal(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_to_pandas():
    frame = small_trace().to_pandas()
    assert list(frame.columns) == [
        "sequence",
        "position",
        "token_id",
        "token",
        "top_gap",
        "chosen_gap",
        "surprisal",
        "entropy",
        "rank",
        "alternatives",
    ]
    assert str(frame["rank"].dtype) == "Int64" and frame["rank"].isna().tolist() == [True, False, False]


def test_to_pandas_without_pandas_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        small_trace().to_pandas()


# --------------------------------------------------------------------------------------------
# LogitGapMonitor driven by hand


def reference_stats(scores_by_step, lineage, tokens, top_k=DEFAULT_TOP_K):
    """Per token k: the reference statistics of ``scores_by_step[k][lineage[k]]`` for ``tokens[k]``."""
    return [
        reference_row(scores_by_step[k][lineage[k]].double().tolist(), tokens[k], top_k) for k in range(len(tokens))
    ]


def assert_trace_matches(seq: SequenceTrace, refs: list[dict], tol=1e-5):
    assert len(seq) == len(refs)
    for k, ref in enumerate(refs):
        for name in ("top_gap", "chosen_gap", "surprisal", "entropy"):
            assert_close(getattr(seq, name)[k].item(), ref[name], tol, f"token {k} {name}")
        assert seq.rank[k].item() == ref["rank"], f"token {k} rank"
        for j, lp in enumerate(ref["top_logprobs"]):
            assert_close(seq.top_logprobs[k, j].item(), lp, tol, f"token {k} top_logprobs[{j}]")


def test_monitor_greedy_like_history():
    g = torch.Generator().manual_seed(0)
    rows, vocab, prompt_len, steps = 3, 20, 4, 6
    ids = torch.randint(1, vocab, (rows, prompt_len), generator=g)
    monitor = LogitGapMonitor()
    all_scores = []
    for _ in range(steps):
        scores = torch.randn(rows, vocab, generator=g)
        assert monitor(ids, scores) is scores
        all_scores.append(scores)
        ids = torch.cat([ids, torch.randint(1, vocab, (rows, 1), generator=g)], dim=1)
    trace = monitor.trace(ids)
    for r in range(rows):
        tokens = ids[r, prompt_len:].tolist()
        assert trace[r].token_ids.tolist() == tokens
        assert trace[r].positions.tolist() == list(range(prompt_len, prompt_len + steps))
        assert_trace_matches(trace[r], reference_stats(all_scores, [r] * steps, tokens))
    # Without the output, the last step's choice is unknown: all tokens but the last.
    partial = monitor.trace()
    assert [len(s) for s in partial] == [steps - 1] * rows
    assert torch.equal(partial[0].surprisal, trace[0].surprisal[:-1])


def run_fake_beam_search(seed=0, rows=4, vocab=12, prompt_len=3, steps=5):
    """Rows are reordered every step: row i continues parent[i] with a token unique per step."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (1, prompt_len), generator=g).repeat(rows, 1)
    monitor = LogitGapMonitor(eos_token_id=0, top_k=3)
    all_scores, parents, histories = [], [], []
    for step in range(steps):
        scores = numerics.log_softmax(torch.randn(rows, vocab, generator=g) * 2)
        if step == 0:  # identical histories (the prompt) have identical distributions
            scores = scores[:1].repeat(rows, 1)
        monitor(ids, scores)
        all_scores.append(scores)
        histories.append(ids)
        parent = torch.randint(0, rows, (rows,), generator=g)
        token = torch.randperm(vocab - 1, generator=g)[:rows] + 1  # distinct, never EOS
        parents.append(parent)
        ids = torch.cat([ids[parent], token[:, None]], dim=1)
    return monitor, ids, all_scores, parents, histories


def lineage_of(row: int, parents: list[torch.Tensor]) -> list[int]:
    """Rows at steps 0..S-1 that produced the S generated tokens of final row ``row``."""
    path = []
    for parent in reversed(parents):
        row = int(parent[row])
        path.append(row)
    return path[::-1]


def test_monitor_follows_reordered_rows():
    monitor, ids, all_scores, parents, _ = run_fake_beam_search()
    steps = len(all_scores)
    # Return the final rows in a different order, as beam search does.
    order = [2, 0, 3]
    trace = monitor.trace(ids[order])
    for out_row, row in enumerate(order):
        tokens = ids[row, -steps:].tolist()
        refs = reference_stats(all_scores, lineage_of(row, parents), tokens, top_k=3)
        assert_trace_matches(trace[out_row], refs)


def test_monitor_finished_hypothesis_resolution():
    """A hypothesis that ended with EOS at an earlier step is resolved exactly from the EOS
    record; other early endings from the kept top-k, else nan."""
    monitor, ids, all_scores, parents, histories = run_fake_beam_search(seed=3, steps=5)
    k = 2  # the hypothesis ends at step 2: history of some row at step 2, plus one more token
    row_at_end = 1
    lineage = lineage_of(row_at_end, parents[:k])
    history = histories[k][row_at_end]
    prompt_len = 3

    def finished(token: int) -> torch.Tensor:
        pad = torch.zeros(ids.shape[1] - history.shape[0] - 1, dtype=torch.long)
        return torch.cat([history, torch.tensor([token]), pad])[None]

    # EOS (id 0): exact.
    trace = monitor.trace(finished(0))
    tokens = finished(0)[0, prompt_len : prompt_len + k + 1].tolist()
    refs = reference_stats(all_scores, [*lineage, row_at_end], tokens, top_k=3)
    assert_trace_matches(trace[0], refs)

    # A non-EOS token inside the top 3: exact from the kept alternatives (padding is EOS here).
    top_token = int(all_scores[k][row_at_end].argsort(descending=True)[1])
    trace = monitor.trace(finished(top_token))
    tokens = finished(top_token)[0, prompt_len : prompt_len + k + 1].tolist()
    assert_trace_matches(trace[0], reference_stats(all_scores, [*lineage, row_at_end], tokens, top_k=3))

    # Outside the top 3 and not EOS: nan, rank -1 (documented).
    low_token = int(all_scores[k][row_at_end].argsort(descending=True)[-1])
    trace = monitor.trace(finished(low_token))
    assert len(trace[0]) == k + 1
    assert math.isnan(trace[0].surprisal[-1].item()) and trace[0].rank[-1].item() == -1
    assert math.isfinite(trace[0].top_gap[-1].item())


def test_monitor_rejects_foreign_output():
    monitor, ids, _, _, _ = run_fake_beam_search()
    foreign = ids.clone()
    foreign[:, 0] = foreign[:, 0] % 11 + 1  # a prompt token no row had
    with pytest.raises(ValueError, match="prompt that no recorded row had"):
        monitor.trace(foreign)
    # Same prompt, then generated tokens that no step produced (and that are not padding).
    diverging = torch.cat([ids[:1, :3], torch.full((1, ids.shape[1] - 3), 99)], dim=1)
    with pytest.raises(ValueError, match="leaves the recorded generation"):
        monitor.trace(diverging)
    # More generated tokens than recorded steps.
    too_long = torch.cat([ids[:1], torch.tensor([[5, 6]])], dim=1)
    with pytest.raises(ValueError, match="leaves the recorded generation"):
        monitor.trace(too_long)
    with pytest.raises(ValueError, match="nothing recorded"):
        LogitGapMonitor().trace(ids)
    with pytest.raises(ValueError, match="output must be"):
        monitor.trace(torch.zeros(2, 3))


def test_monitor_detects_new_generation_from_input_ids():
    g = torch.Generator().manual_seed(5)
    monitor = LogitGapMonitor()
    vocab = 10

    def generate(prompt: torch.Tensor, steps: int):
        ids, scores_by_step = prompt, []
        for _ in range(steps):
            scores = torch.randn(ids.shape[0], vocab, generator=g)
            monitor(ids, scores)
            scores_by_step.append(scores)
            ids = torch.cat([ids, torch.randint(0, vocab, (ids.shape[0], 1), generator=g)], dim=1)
        return ids, scores_by_step

    first, _ = generate(torch.randint(0, vocab, (2, 3), generator=g), 4)  # last call had length 6
    # Same rows, length exactly previous + 1, but a new prompt: only the content tells.
    prompt = torch.randint(0, vocab, (2, 7), generator=g)
    prompt[:, 0] = (first[:, 0] + 1) % vocab
    second, scores_by_step = generate(prompt, 3)
    trace = monitor.trace(second)
    for r in range(2):
        tokens = second[r, 7:].tolist()
        assert_trace_matches(trace[r], reference_stats(scores_by_step, [r] * 3, tokens))
    # reset() forgets everything.
    monitor.reset()
    with pytest.raises(ValueError, match="nothing recorded"):
        monitor.trace(second)


def test_monitor_never_syncs_with_the_host(monkeypatch, deferred_checks):
    def forbidden(*args, **kwargs):
        raise AssertionError("host round trip in the hot path")

    # The input policy's check as on a CUDA device (deferred_checks): no tensor read in the hot path.
    monitor = LogitGapMonitor(eos_token_id=[0, 1])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (2, 3), generator=g)
    score_list = [torch.randn(2, 9, generator=g).half() for _ in range(3)]
    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, forbidden)
        for scores in score_list:
            before = scores.clone()
            assert monitor(ids, scores) is scores
            assert torch.equal(scores, before)
            ids = torch.cat([ids, ids[:, -1:]], dim=1)
    trace = monitor.trace(ids)
    assert [len(s) for s in trace] == [3, 3]
