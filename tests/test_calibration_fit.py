"""The temperature fit on synthetic ground truth: exact, streaming, and the numerics under it.

Labels are drawn from ``softmax(z / T*)`` for known ``T*``, so the NLL-optimal temperature tends
to ``T*``; the streaming one-pass fit must equal the exact in-memory optimum (Newton) and the
minimum over a brute-force grid.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from logit_processors import numerics
from logit_processors.calibration.fit import fit_temperature, optimal_temperature
from logit_processors.runtime.streamed_logits import text_windows


def synthetic(n: int, vocab: int, true_temperature: float, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, vocab, generator=g)
    labels = torch.multinomial(torch.softmax(logits / true_temperature, -1), 1, generator=g).squeeze(1)
    return logits, labels


def chunked(logits, labels, size):
    return [(logits[i : i + size], labels[i : i + size]) for i in range(0, logits.shape[0], size)]


def mean_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    z = logits.double() / temperature
    return float((torch.logsumexp(z, -1) - z.gather(1, labels[:, None]).squeeze(1)).mean())


# --------------------------------------------------------------------------------------------
# numerics.tempered_log_partition


def test_tempered_log_partition_matches_autograd_float64():
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(16, 300, generator=g, dtype=torch.float64)
    z[0, :50] = float("-inf")  # masked entries weigh nothing
    betas = [0.2, 1.0, 3.7]
    log_z, mean, variance = numerics.tempered_log_partition(z.float(), betas)
    assert log_z.dtype == torch.float64 and log_z.shape == (16, 3)
    # Row 0 equals the same row without its masked entries.
    unmasked = numerics.tempered_log_partition(z[:1, 50:].float(), betas)
    for ours, reference in zip((log_z, mean, variance), unmasked, strict=True):
        assert torch.allclose(ours[:1], reference, rtol=1e-5, atol=1e-5)
    for k, b in enumerate(betas):
        beta = torch.tensor(b, dtype=torch.float64, requires_grad=True)
        f = torch.logsumexp(beta * z[1:], dim=-1)
        (first,) = torch.autograd.grad(f.sum(), beta, create_graph=True)
        (second,) = torch.autograd.grad(first, beta)
        assert torch.allclose(log_z[1:, k], f.detach(), rtol=1e-6, atol=1e-5)
        # Summed over rows, the derivatives equal the sums of the per-row mean and variance.
        assert float(mean[1:, k].sum()) == pytest.approx(float(first.detach()), rel=1e-5)
        assert float(variance[1:, k].sum()) == pytest.approx(float(second), rel=1e-4)


def test_tempered_log_partition_extreme_logits_stay_finite():
    z = torch.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]])
    log_z, mean, variance = numerics.tempered_log_partition(z.to(torch.bfloat16), [1e-3, 1.0, 50.0])
    assert torch.isfinite(log_z).all() and torch.isfinite(mean).all() and torch.isfinite(variance).all()
    assert float(log_z[1, 1]) == pytest.approx(math.log(3))
    assert float(variance[1, 0]) == pytest.approx(0.0, abs=1e-9)


def test_tempered_log_partition_bad_inputs():
    with pytest.raises(ValueError, match="betas"):
        numerics.tempered_log_partition(torch.zeros(2, 3), [0.0])
    with pytest.raises(ValueError, match="shape"):
        numerics.tempered_log_partition(torch.zeros(3), [1.0])
    with pytest.raises(ValueError, match="fully masked"):
        numerics.tempered_log_partition(torch.full((1, 3), float("-inf")), [1.0])


# --------------------------------------------------------------------------------------------
# Ground truth


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_true_temperature(true_temperature):
    logits, labels = synthetic(20_000, 40, true_temperature, seed=int(true_temperature * 10))
    fit = fit_temperature(chunked(logits, labels, 3000))
    assert fit.temperature == pytest.approx(true_temperature, rel=0.02)
    assert fit.passes == 1 and fit.positions == 20_000
    assert fit.nll <= fit.nll_uncalibrated + 1e-12


@pytest.mark.parametrize("true_temperature", [0.7, 1.8])
def test_streaming_fit_equals_in_memory_and_brute_force_optimum(true_temperature):
    logits, labels = synthetic(4_000, 50, true_temperature, seed=7)
    exact = optimal_temperature(logits, labels)
    streamed = fit_temperature(chunked(logits, labels, 333))  # uneven chunks
    assert streamed.temperature == pytest.approx(exact, rel=1e-5)
    # Brute force, independent of both: float64 NLL on a grid 1e-4 apart (relative) within 1%.
    grid = torch.linspace(0.99 * exact, 1.01 * exact, 201, dtype=torch.float64)
    z, chosen = logits.double(), logits.double().gather(1, labels[:, None])
    nlls = (torch.logsumexp(z[None] / grid[:, None, None], -1) - (chosen / grid[:, None, None]).squeeze(-1)).mean(-1)
    best = float(grid[nlls.argmin()])
    assert streamed.temperature == pytest.approx(best, rel=1e-4)
    assert streamed.nll == pytest.approx(mean_nll(logits, labels, streamed.temperature), rel=1e-6)
    assert streamed.nll_uncalibrated == pytest.approx(mean_nll(logits, labels, 1.0), rel=1e-6)
    assert streamed.interpolation_error < 1e-3


def test_chunking_does_not_change_the_fit():
    logits, labels = synthetic(3_000, 32, 1.3, seed=2)
    same_probe = [fit_temperature(chunked(logits, labels, size)).temperature for size in (3000, 1000, 300)]
    assert max(same_probe) - min(same_probe) <= 1e-9 * same_probe[0]  # the same nodes: the same sums
    # A 7-row first chunk probes worse, so the nodes differ; the minimum does not.
    assert fit_temperature(chunked(logits, labels, 7)).temperature == pytest.approx(same_probe[0], rel=1e-5)


def test_a_bad_start_takes_another_pass():
    logits, labels = synthetic(5_000, 30, 3.0, seed=4)
    exact = optimal_temperature(logits, labels)
    with pytest.warns(UserWarning, match="another pass"):
        fit = fit_temperature(chunked(logits, labels, 1000), initial_temperature=0.3)
    assert fit.passes >= 2
    assert fit.temperature == pytest.approx(exact, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good start: no warning, one pass
        assert fit_temperature(chunked(logits, labels, 1000), initial_temperature=2.5).passes == 1


def test_fit_accepts_a_callable_and_rejects_bad_chunks():
    logits, labels = synthetic(2_000, 20, 1.0, seed=5)
    fit = fit_temperature(lambda: iter(chunked(logits, labels, 500)))
    assert fit.temperature == pytest.approx(optimal_temperature(logits, labels), rel=1e-5)
    with pytest.raises(ValueError, match="no positions"):
        fit_temperature([])
    with pytest.raises(ValueError, match="targets"):
        fit_temperature([(logits, labels[:10])])
    with pytest.raises(ValueError, match="token ids"):
        fit_temperature([(logits, labels + 100)])
    with pytest.raises(ValueError, match="initial_temperature"):
        fit_temperature([(logits, labels)], initial_temperature=-1.0)


def test_degenerate_data_is_refused():
    # Every label is the top token: the NLL keeps falling as T -> 0.
    logits = torch.randn(100, 10)
    with pytest.raises(ValueError, match="degenerate"):
        fit_temperature([(logits, logits.argmax(-1))])


def test_optimal_temperature_refuses_degenerate_data():
    logits = torch.randn(200, 10)
    with pytest.raises(ValueError, match="degenerate"):  # always right: T -> 0
        optimal_temperature(logits, logits.argmax(-1))
    with pytest.raises(ValueError, match="degenerate"):  # always wrong where it is sure: T -> infinity
        optimal_temperature(torch.tensor([[5.0, 0.0]] * 4), torch.tensor([1, 1, 1, 1]))


def test_optimal_temperature_on_a_tiny_case():
    # Two classes, logit gap 2, right 3 times in 4: sigmoid(2 / T) = 3/4, T = 2 / log 3.
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    assert optimal_temperature(logits, torch.tensor([0, 0, 1, 1])) == pytest.approx(2 / math.log(3), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Windows


def test_text_windows_split_and_keep_the_prefix():
    assert text_windows(None, [[1, 2, 3, 4, 5]], max_length=2) == [[1, 2], [3, 4]]  # [5] alone predicts nothing
    assert text_windows(None, [[7]], max_length=4) == []

    class BosTokenizer:  # adds a BOS (id 0) before every text, like Gemma's
        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) for c in text]
            return {"input_ids": ([0] if add_special_tokens else []) + ids}

    windows = text_windows(BosTokenizer(), ["abcdefg"], max_length=4)
    assert windows == [[0, 97, 98, 99], [0, 100, 101, 102], [0, 103]]
    with pytest.raises(ValueError, match="max_length"):
        text_windows(None, [[1, 2]], max_length=1)
