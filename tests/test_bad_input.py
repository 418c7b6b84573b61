"""The input policy, fuzzed: every public processor through bad and unusual input (tests/bad_inputs.py).

Bad constructor arguments, NaN and +inf, rows without a finite entry, empty batches, one
column, other dtypes, the meta device, wrong shapes and types, token ids beyond a model's
vocabulary, state across calls and threads: each must give a clear error that says what is
wrong, or a valid result, never an obscure error or a silent bad output. Also hypothesis: NaN
or +inf anywhere in any batch is named by row and value, for every processor.
"""

from __future__ import annotations

import math

import pytest
import torch
from bad_inputs import FACTORIES, Environment, all_cases, judge, public_processors, scores_for
from hypothesis import given, settings
from hypothesis import strategies as st

import logit_processors as lp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env():
    return Environment()


def test_every_public_processor_is_in_the_catalogue():
    missing = [name for name in public_processors() if name not in FACTORIES]
    assert not missing, f"add a factory (and bad arguments) to tests/bad_inputs.py for {missing}"


def test_every_case_comes_out_right(env):
    cases = all_cases(env)
    wrong = [(case, *judge(case)) for case in cases]
    wrong = [f"{c.processor} [{c.kind}] {c.label}: {outcome}: {detail}" for c, outcome, detail in wrong if outcome != "correct"]
    assert len(cases) > 400
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong)


CHEAP = ["Temperature", "EntropyTemperature", "TopK", "TopP", "MinP", "TokenMask", "CalibratedTemperature"]


@pytest.mark.parametrize("name", CHEAP)
@settings(max_examples=40)
@given(data=st.data())
def test_nan_and_inf_anywhere_are_named(env, name, data):
    rows = data.draw(st.integers(1, 5))
    width = data.draw(st.integers(8, 64))
    scores = scores_for(rows, width, seed=data.draw(st.integers(0, 1000)))
    row, column = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, width - 1))
    value = data.draw(st.sampled_from([math.nan, math.inf]))
    scores[row, column] = value
    proc = lp.TokenMask(deny=[0]) if name == "TokenMask" else FACTORIES[name](env)
    word = "NaN" if value != value else r"\+inf"
    with pytest.raises(ValueError, match=rf"{name}: row {row} holds {word} \(at column"):
        proc(torch.zeros(rows, 1, dtype=torch.long), scores)


@pytest.mark.parametrize("name", CHEAP)
def test_pass_skips_the_check_and_never_takes_nan_for_an_empty_row(env, name):
    scores = scores_for(2, 16)
    scores[1] = math.nan
    proc = lp.TokenMask(deny=[0], on_nan="pass", on_empty="keep_eos", eos_token_id=3) if name == "TokenMask" else \
        FACTORIES[name](env, on_nan="pass")
    out = proc(torch.zeros(2, 1, dtype=torch.long), scores)
    assert out.shape == scores.shape
    if name == "TokenMask":  # keep_eos did not take the NaN row for an empty one: its EOS is not rewritten
        assert out[1].isnan().all() and out[0, 3] == scores[0, 3]


def test_a_keep_eos_processor_takes_rows_that_arrive_empty(env):
    scores = scores_for(2, 16)
    scores[0] = -math.inf
    out = lp.TopK(3, on_empty="keep_eos", eos_token_id=5)(torch.zeros(2, 1, dtype=torch.long), scores)
    assert out[0].tolist() == [-math.inf] * 5 + [0.0] + [-math.inf] * 10
    assert (out[1] > -math.inf).sum() == 3


def test_the_issue_examples(env):
    ids = torch.zeros(1, 1, dtype=torch.long)
    nan = math.nan
    with pytest.raises(ValueError, match="TopK: row 0 holds NaN"):  # was [[0, -inf, nan, ...]]: EOS overwritten
        lp.TopK(3, on_empty="keep_eos", eos_token_id=0)(ids, torch.tensor([[1, 2, nan, 3, 4, 5, 6, 7.0]]))
    out = lp.Temperature(1e-6)(ids, torch.tensor([[1e33, -1e33, 0.0]]))  # was [inf, -inf, 0]
    assert out.isfinite().all() and out.argmax().item() == 0
    with pytest.raises(ValueError, match="temperature must be at least 1e-30"):  # was [inf, inf] at the call
        lp.Temperature(1e-39)
    from transformers import LogitsProcessorList

    LogitsProcessorList([lp.Temperature(0.7) | lp.TopK(5)])(ids, torch.randn(1, 8))  # was HF's "required parameters"
    primary = torch.randn(1, env.width)
    primary[0, 5] = nan  # was a row entirely -inf, silently
    with pytest.raises(ValueError, match="LogOddsEnsemble: row 0 holds NaN"):
        FACTORIES["LogOddsEnsemble"](env)(torch.tensor([[5, 6]]), primary)
