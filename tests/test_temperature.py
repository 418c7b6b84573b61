"""Temperature and EntropyTemperature: exact division, ordering, half precision, bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import TemperatureLogitsWarper

from logit_processors import EntropyTemperature, Temperature, numerics

NEG_INF = float("-inf")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def ids(b: int) -> torch.Tensor:
    return torch.zeros(b, 1, dtype=torch.long)


logit_rows = st.lists(st.floats(-30, 30, width=32), min_size=2, max_size=50)
temperatures = st.floats(min_value=1e-4, max_value=100.0)


@given(logit_rows, temperatures)
def test_float32_equals_plain_division_and_huggingface(row, t):
    scores = torch.tensor([row])
    out = Temperature(t)(ids(1), scores)
    assert torch.equal(out, scores / t)
    assert torch.equal(out, TemperatureLogitsWarper(t)(ids(1), scores))


@given(logit_rows, temperatures)
def test_temperature_preserves_argmax_and_ordering(row, t):
    scores = torch.tensor([row], dtype=torch.float64)
    out = Temperature(t)(ids(1), scores)
    order = torch.argsort(scores[0], stable=True)
    assert torch.all(out[0][order][1:] >= out[0][order][:-1])
    assert out[0].argmax() == scores[0].argmax()


@given(logit_rows, temperatures, st.floats(-100, 100))
def test_distribution_is_shift_invariant(row, t, shift):
    scores = torch.tensor([row], dtype=torch.float64)
    a = numerics.log_softmax(Temperature(t)(ids(1), scores))
    b = numerics.log_softmax(Temperature(t)(ids(1), scores + shift))
    torch.testing.assert_close(a, b, atol=1e-5 / min(t, 1.0) * 1e-3 + 1e-6, rtol=1e-6)


def test_temperature_one_returns_the_same_tensor():
    scores = torch.randn(2, 5)
    assert Temperature(1.0)(ids(2), scores) is scores


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [1e-4, 1e-6, 0.7, 3.0])
def test_tiny_temperature_in_half_precision_never_makes_inf_or_nan(dtype, t):
    torch.manual_seed(0)
    scores = (torch.randn(4, 3000) * 20).to(dtype)
    scores[0, :10] = NEG_INF  # already masked tokens stay masked
    original = scores.clone()
    out = Temperature(t)(ids(4), scores)
    assert torch.equal(scores, original), "input tensor was modified"
    assert out.dtype == dtype
    assert not torch.isnan(out).any()
    assert torch.isneginf(out[0, :10]).all()
    assert torch.isfinite(out[1:]).all() and torch.isfinite(out[0, 10:]).all()
    assert torch.equal(out.argmax(-1), scores.argmax(-1))
    # Same distribution as exact float64 arithmetic, up to the dtype's rounding.
    want = torch.softmax(scores.double() / t, -1)
    got = torch.softmax(out.double(), -1)
    torch.testing.assert_close(got, want, atol=2e-2 if dtype != torch.float32 else 1e-5, rtol=0)


def test_per_row_temperature_changes_only_its_row():
    scores = torch.randn(3, 10)
    out = Temperature(torch.tensor([1.0, 0.5, 2.0]))(ids(3), scores)
    assert torch.equal(out[0], scores[0])
    assert torch.equal(out[1], scores[1] / 0.5)
    assert torch.equal(out[2], scores[2] / 2.0)


def test_per_prompt_temperature_expands_to_generated_rows():
    scores = torch.randn(6, 10)
    out = Temperature(torch.tensor([1.0, 2.0]))(ids(6), scores)
    assert torch.equal(out[:3], scores[:3]) and torch.equal(out[3:], scores[3:] / 2.0)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "0.5", None, True])
def test_bad_temperature_is_named(bad):
    with pytest.raises(ValueError, match=r"temperature must be a positive finite number; got"):
        Temperature(bad)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([1.0, 0.0]), r"rows \[1\] have \[0.0\]"),
        (torch.tensor([float("nan"), 1.0]), r"rows \[0\]"),
        (torch.tensor([[1.0]]), "must be 1-D"),
        (torch.tensor([]), "must be 1-D"),
    ],
)
def test_bad_per_row_temperatures_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        Temperature(bad)


def test_per_row_tensor_of_wrong_length_is_refused_at_call():
    with pytest.raises(ValueError, match="temperature has 2 rows but the batch has 3"):
        Temperature(torch.tensor([1.0, 2.0]))(ids(3), torch.randn(3, 5))


# EntropyTemperature


def test_entropy_temperature_formula_per_row():
    proc = EntropyTemperature(0.5, 2.0, exponent=2.0)
    scores = torch.tensor([[5.0, 1.0, 0.0, NEG_INF], [0.0, 0.0, 0.0, 0.0], [1.0, NEG_INF, NEG_INF, NEG_INF]])
    p = torch.softmax(scores[0].double(), -1)[:3]
    h = -(p * p.log()).sum().item() / math.log(3)
    want_t = [0.5 + 1.5 * h**2, 2.0, 0.5]
    got_t = proc.row_temperatures(scores).tolist()
    assert got_t == pytest.approx(want_t, rel=1e-5)
    out = proc(ids(3), scores)
    torch.testing.assert_close(out, scores / torch.tensor(want_t, dtype=torch.float32)[:, None])


@given(st.lists(st.floats(-20, 20, width=32), min_size=2, max_size=40))
def test_entropy_temperature_stays_in_range_and_keeps_order(row):
    proc = EntropyTemperature(0.3, 1.7)
    scores = torch.tensor([row])
    t = proc.row_temperatures(scores).item()
    assert 0.3 - 1e-6 <= t <= 1.7 + 1e-6
    assert proc(ids(1), scores)[0].argmax() == scores[0].argmax()


@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_temperature_dtypes(dtype):
    scores = (torch.randn(3, 2000) * 10).to(dtype)
    out = EntropyTemperature(1e-4, 1e-3)(ids(3), scores)
    assert out.dtype == dtype and not torch.isnan(out).any()


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.0, 1.0), "min_t must be a positive finite number"),
        ((1.0, float("inf")), "max_t must be a positive finite number"),
        ((2.0, 1.0), "max_t must be >= min_t"),
        ((0.5, 1.0, -1.0), "exponent must be a positive finite number"),
    ],
)
def test_entropy_temperature_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        EntropyTemperature(*args)


def test_entropy_temperature_reuses_its_scratch_safely_across_calls_threads_and_copies():
    import copy
    import pickle
    import threading

    proc = EntropyTemperature(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(b, v, generator=g) * s for b, v, s in [(3, 500, 2.0), (3, 500, 9.0), (5, 77, 1.0), (3, 500, 0.5)]]
    batches.append(batches[0].double())
    batches[2][1, :70] = NEG_INF
    for scores in batches:  # same shape twice (scratch reused), then other shapes and dtypes
        before = scores.clone()
        want = scores / (0.5 + numerics.normalized_entropy(scores))[:, None].to(scores.dtype)
        torch.testing.assert_close(proc(ids(scores.shape[0]), scores), want)
        assert torch.equal(scores, before)
    # Two threads sharing the processor each get their own scratch.
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(20):
                results[i] = proc(ids(3), batches[i])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in (0, 1):
        torch.testing.assert_close(results[i], batches[i] / (0.5 + numerics.normalized_entropy(batches[i]))[:, None])
    for clone in (copy.deepcopy(proc), pickle.loads(pickle.dumps(proc))):
        torch.testing.assert_close(clone(ids(3), batches[1]), proc(ids(3), batches[1]))


@pytest.mark.parametrize("make", [lambda: Temperature(1e-6), lambda: Temperature(torch.tensor([1e-6, 0.5, 2.0])),
                                  lambda: EntropyTemperature(1e-6, 1.0)])
def test_overflow_repair_on_an_accelerator_reads_nothing_back(monkeypatch, deferred_checks, make):
    # As on a CUDA device (deferred_checks): below T = 1 the overflow repair is chosen per row on
    # the device, with no host read; the rows come out as the CPU path's (same float64 repair),
    # and bad input is still reported by the deferred check.
    def forbidden(*args, **kwargs):
        raise AssertionError("host round trip in the hot path")

    scores = torch.tensor([[1e33, -1e33, 0.0, NEG_INF], [3.0, 1.0, 0.0, -2.0], [1e30, 1.0, 0.0, NEG_INF]])
    processor = make()
    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, forbidden)
        on_device = processor(ids(3), scores)
    from logit_processors import core

    core.PENDING.raise_pending()
    monkeypatch.undo()  # the CPU path, which reads row maxima back
    on_host = processor(ids(3), scores)
    assert torch.equal(on_device, on_host)
    assert not torch.isnan(on_device).any() and not torch.isposinf(on_device).any()
    assert torch.isneginf(on_device[:, 3][[0, 2]]).all()
    assert torch.equal(on_device.argmax(-1), scores.argmax(-1))


def test_deferred_check_still_reports_nan_after_the_device_repair(deferred_checks):
    from logit_processors import core

    Temperature(1e-6)(ids(1), torch.tensor([[1e33, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        core.PENDING.raise_pending()
