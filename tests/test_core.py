"""The processor contract: validation, chaining, caches, the fully-masked-row policy."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper

from logit_processors import Chain, Processor, Temperature, TokenMask
from logit_processors.core import DeviceCache
from logit_processors.validate import per_row

IDS = torch.zeros(2, 3, dtype=torch.long)


def test_processors_are_transformers_logits_processors():
    assert isinstance(Temperature(0.5), LogitsProcessor)
    assert isinstance(Chain(Temperature(0.5)), LogitsProcessorList)


def test_chain_applies_left_to_right_and_flattens():
    scores = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    chain = Temperature(0.5) | TokenMask(deny=[0])
    assert isinstance(chain, Chain) and len(chain) == 2
    nested = Chain(chain, Temperature(2.0))
    assert len(nested) == 3
    out = nested(IDS, scores)
    want = torch.tensor([[float("-inf"), 2.0, 1.0], [float("-inf"), 1.0, 2.0]])
    assert torch.equal(out, want)
    assert len(TemperatureLogitsWarper(0.5) | Chain(Temperature(0.5))) == 2


def test_chain_mixes_with_huggingface_processors():
    scores = torch.randn(2, 7)
    chain = Chain(TemperatureLogitsWarper(0.5), Temperature(2.0))
    torch.testing.assert_close(chain(IDS, scores), scores)


def test_chain_reset_resets_members():
    class Counter(Processor):
        def __init__(self):
            self.calls = 0

        def process(self, input_ids, scores):
            self.calls += 1
            return scores

        def reset(self):
            self.calls = 0

    counter = Counter()
    chain = Chain(counter, Temperature(1.0))
    chain(IDS, torch.zeros(2, 4))
    assert counter.calls == 1
    chain.reset()
    assert counter.calls == 0


def test_chain_rejects_non_callables():
    with pytest.raises(TypeError, match="processor #1"):
        Chain(Temperature(1.0), 42)


@pytest.mark.parametrize(
    "input_ids, scores, match",
    [
        (IDS, torch.zeros(2, 3, 4), "scores must be a float tensor"),
        (IDS, torch.zeros(2, 4, dtype=torch.long), "scores must be a float tensor"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3, 4), "input_ids must be"),
        (IDS, torch.zeros(3, 4), "input_ids has 2 rows but scores has 3"),
    ],
)
def test_bad_call_arguments_are_named(input_ids, scores, match):
    with pytest.raises(ValueError, match=match):
        Temperature(0.5)(input_ids, scores)
    with pytest.raises(ValueError, match=match):
        Chain(Temperature(0.5))(input_ids, scores)


def test_device_cache_builds_once_per_device_and_dtype():
    cache, builds = DeviceCache(), []

    def build():
        builds.append(1)
        return torch.ones(3)

    a = cache.get(torch.device("cpu"), torch.float32, "k", build)
    b = cache.get(torch.device("cpu"), torch.float32, "k", build)
    c = cache.get(torch.device("cpu"), torch.float16, "k", build)
    assert a is b and c.dtype == torch.float16 and len(builds) == 2


def test_per_row_expands_prompts_to_generate_rows():
    values = torch.tensor([1.0, 2.0])
    assert per_row("t", values, 2) is values
    assert per_row("t", values, 6).tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="t has 2 rows but the batch has 3"):
        per_row("t", values, 3)


def test_empty_row_policy_raises_naming_row_or_keeps_eos():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, float("-inf"), float("-inf")]])
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        TokenMask(deny=[0])(IDS, scores)
    out = TokenMask(deny=[0], on_empty="keep_eos", eos_token_id=2)(IDS, scores)
    assert out[1].tolist() == [float("-inf"), float("-inf"), 0.0]
    assert out[0].tolist() == [float("-inf"), 2.0, 3.0]


def test_witness_shortcut_never_hides_nan_or_an_empty_row():
    # The witness column (the first kept one, 1) decides the shortcut: NaN or -inf there, or
    # +inf beside -inf in the batch, must send the call to the full check, which is exact. With
    # on_nan="pass" (no input check) a NaN row is not taken for an empty one: it passes untouched.
    nan, inf = float("nan"), float("inf")
    proc = TokenMask(deny=[0], on_nan="pass")
    out = proc(IDS, torch.tensor([[1.0, 2.0, 3.0], [1.0, nan, nan]]))
    assert out[1, 1:].isnan().all() and out[0].tolist() == [-inf, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"row\(s\) \[0\]"):
        proc(IDS, torch.tensor([[1.0, -inf, -inf], [1.0, inf, 3.0]]))
    scores = torch.tensor([[1.0, -inf, 2.0], [1.0, inf, 3.0]])  # witness -inf and +inf: full check, nothing empty
    assert proc(IDS, scores)[:, 1:].tolist() == [[-inf, 2.0], [inf, 3.0]]
    # The default input policy names the row and what is wrong with it.
    with pytest.raises(ValueError, match=r"TokenMask: row 1 holds NaN \(at column 1\)"):
        TokenMask(deny=[0])(IDS, torch.tensor([[1.0, 2.0, 3.0], [1.0, nan, nan]]))
    with pytest.raises(ValueError, match=r"TokenMask: row 1 holds \+inf \(at column 1\)"):
        TokenMask(deny=[0])(IDS, scores)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"on_empty": "skip"}, "on_empty must be one of"),
        ({"on_empty": "keep_eos"}, "needs eos_token_id"),
        ({"on_empty": "keep_eos", "eos_token_id": -1}, "negative token ids"),
    ],
)
def test_bad_empty_policies_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenMask(deny=[0], **kwargs)


def test_keep_eos_id_outside_scores_is_refused_at_first_call():
    proc = TokenMask(deny=[0], on_empty="keep_eos", eos_token_id=10)
    with pytest.raises(ValueError, match=r"eos_token_id contains token ids \[10\]"):
        proc(IDS, torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------
# The value check, once per chain


def count_checks(monkeypatch) -> list[str]:
    from logit_processors import core

    seen: list[str] = []
    check = core.check_scores

    def counting(owner, scores, **kwargs):
        seen.append(owner)
        return check(owner, scores, **kwargs)

    monkeypatch.setattr(core, "check_scores", counting)
    return seen


def test_a_chain_checks_its_input_once(monkeypatch):
    from logit_processors import TopP

    seen = count_checks(monkeypatch)
    chain = Temperature(1.5) | TokenMask(deny=[0]) | TokenMask(allow=[1, 2, 3]) | TopP(0.9)
    chain(IDS, torch.randn(2, 7))
    assert seen == ["Temperature"]  # the masks and TopP are handed what a checked processor returned
    seen.clear()
    chain(IDS, torch.randn(2, 7))  # a new step, new scores: checked again
    assert seen == ["Temperature"]


def test_scores_touched_between_processors_are_checked_again(monkeypatch):
    nan = float("nan")

    def poke_in_place(input_ids, scores):  # returns the same tensor, edited through a view
        scores[1:, 2] = nan
        return scores

    def new_tensor(input_ids, scores):
        return torch.where(torch.arange(scores.shape[1]) == 3, torch.tensor(float("inf")), scores)

    for meddler, match in ((poke_in_place, r"row 1 holds NaN \(at column 2\)"), (new_tensor, r"row 0 holds \+inf")):
        chain = Chain(Temperature(2.0), meddler, TokenMask(deny=[0]))
        with pytest.raises(ValueError, match="TokenMask: " + match):
            chain(IDS, torch.randn(2, 7))
    # Inside a Hugging Face list, between our processors, the same.
    listed = LogitsProcessorList([Temperature(2.0), poke_in_place, TokenMask(deny=[0])])
    with pytest.raises(ValueError, match="TokenMask: row 1 holds NaN"):
        listed(IDS, torch.randn(2, 7))


def test_unchecked_or_untrusted_outputs_are_not_taken_as_checked(monkeypatch):
    from logit_processors import TopK

    nan = float("nan")
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, nan, 3.0, 4.0]])
    # on_nan="pass" checked nothing: its output is not vouched for.
    with pytest.raises(ValueError, match=r"TokenMask: row 1 holds NaN"):
        Chain(Temperature(2.0, on_nan="pass"), TokenMask(deny=[0]))(IDS, scores)
    # A processor that does not promise valid output (the default) is not trusted either.

    class Passthrough(Processor):
        def process(self, input_ids, scores):
            return scores * torch.tensor([[1.0], [nan]])

    with pytest.raises(ValueError, match=r"TopK: row 1 holds NaN"):
        Chain(Passthrough(), TopK(2))(IDS, scores.nan_to_num(0.0))


@given(
    st.lists(st.sampled_from(["t07", "t2", "deny", "allow", "topk", "topp", "minp", "entropy"]), min_size=1, max_size=5),
    st.lists(st.sampled_from([0.0, 1.0, -3.0, 7.5, float("-inf"), float("nan"), float("inf")]), min_size=12, max_size=12),
)
@settings(max_examples=150, deadline=None)
def test_checking_once_per_chain_decides_like_checking_every_processor(names, values):
    from logit_processors import EntropyTemperature, MinP, TopK, TopP
    from logit_processors.core import VALIDATED

    make = {
        "t07": lambda: Temperature(0.7), "t2": lambda: Temperature(2.0), "deny": lambda: TokenMask(deny=[0, 5]),
        "allow": lambda: TokenMask(allow=[1, 2, 3, 4, 5]), "topk": lambda: TopK(2), "topp": lambda: TopP(0.8),
        "minp": lambda: MinP(0.1), "entropy": lambda: EntropyTemperature(0.5, 1.5),
    }
    scores = torch.tensor(values).reshape(2, 6)

    def outcome(chain):
        try:
            return chain(IDS, scores)
        except ValueError as error:
            return str(error).split(":")[0]  # the processor that refused

    once = outcome(Chain(*[make[n]() for n in names]))
    holds = VALIDATED.holds
    VALIDATED.holds = lambda scores: False  # every processor checks its input
    try:
        every = outcome(Chain(*[make[n]() for n in names]))
    finally:
        VALIDATED.holds = holds
    if isinstance(once, torch.Tensor) and isinstance(every, torch.Tensor):
        assert torch.equal(once, every)
    else:
        assert once == every


def test_a_chain_checks_once_also_under_inference_mode(monkeypatch):
    # Inference tensors have no version counter: a plain list cannot vouch for them, but a Chain
    # hands each member's output to the next itself.
    from logit_processors import LogitGapMonitor, TopP

    seen = count_checks(monkeypatch)
    with torch.inference_mode():
        scores = torch.randn(2, 7)
        (Temperature(1.5) | LogitGapMonitor() | TokenMask(deny=[0]) | TopP(0.9))(IDS, scores)
        assert seen == ["Temperature"]
        seen.clear()
        LogitsProcessorList([Temperature(1.5), TokenMask(deny=[0])])(IDS, scores)
        assert seen == ["Temperature", "TokenMask"]
        poked = torch.randn(2, 7)
        with pytest.raises(ValueError, match=r"TokenMask: row 0 holds NaN"):
            Chain(Temperature(1.5), lambda i, s: s.index_fill_(1, torch.tensor([3]), float("nan")), TokenMask(deny=[0]))(IDS, poked)
