"""The processor contract: validation, chaining, caches, the fully-masked-row policy."""

import pytest
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
