"""Scoring text on bytes across tokenizers: spans, mixtures, the generation-mode scores, score-text.

References are independent: float64 forward passes and brute-force boundary search; the
generation-mode scores are checked against the real LogOddsEnsemble stepped over the same text.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import LogOddsEnsemble
from logit_processors.ensemble.byte_spans import (
    common_boundaries,
    fit_mixture_weights,
    score_spans,
    span_log_probs,
    token_log_probs,
)
from logit_processors.ensemble.generation_score import generation_scores
from logit_processors.ensemble.score_text import score_text
from logit_processors.models import load_tiny_gemma, tiny_gemma_path
from logit_processors.runtime.text_codec import TextCodec

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "The if statement, café ☕ 日本語:\n\n    return  x  # done."
FIT = "Exceptions are raised when an error occurs; the try statement handles them."


@pytest.fixture(scope="module")
def pair(tiny_gpt2):
    gemma, gemma_tokenizer = load_tiny_gemma()
    return [tiny_gpt2[0], gemma], [tiny_gpt2[1], gemma_tokenizer]


def reference_token_log_probs(model, codec, text):
    ids = codec.start_ids + codec.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    log_p = torch.log_softmax(logits, dim=-1)
    return [float(log_p[k - 1, ids[k]]) for k in range(len(codec.start_ids), len(ids))]


def test_token_log_probs_match_a_float64_forward_pass(pair):
    models, tokenizers = pair
    for model, tokenizer in zip(models, tokenizers, strict=True):
        codec = TextCodec.of(tokenizer)
        scored = token_log_probs(model, codec, TEXT)
        reference = reference_token_log_probs(model, codec, TEXT)
        # float32 logits (|z| <~ 20) against float64 ones: ~sqrt(L) eps |z| ~ 1e-5 apart per token.
        assert scored.log_probs == pytest.approx(reference, abs=1e-4)
        assert scored.n_bytes == len(TEXT.encode())


def test_spans_end_where_both_tokenizations_end_a_token(pair):
    models, tokenizers = pair
    codecs = [TextCodec.of(t) for t in tokenizers]
    ends = [set(c.token_ends(c.encode(TEXT))) for c in codecs]
    brute = [b for b in range(1, len(TEXT.encode()) + 1) if all(b in e for e in ends)]
    scores = score_spans(models, codecs, [TEXT])
    assert len(scores.spans[0][0]) == len(brute) and brute[-1] == len(TEXT.encode())
    # Spans telescope: each model's span log-probs sum to its log-probability of the whole text.
    for k, (model, codec) in enumerate(zip(models, codecs, strict=True)):
        assert math.fsum(scores.spans[0][k]) == pytest.approx(math.fsum(token_log_probs(model, codec, TEXT).log_probs))


def test_one_hot_weights_give_each_member_and_the_pool_stays_between(pair):
    models, tokenizers = pair
    scores = score_spans(models, [TextCodec.of(t) for t in tokenizers], [TEXT, FIT])
    members = scores.member_bits_per_byte()
    assert scores.mixture_bits_per_byte([1, 0]) == pytest.approx(members[0], rel=1e-12)
    assert scores.mixture_bits_per_byte([0, 1]) == pytest.approx(members[1], rel=1e-12)
    # A mixture never costs more than the weighted mean of its members' bits (log is concave) ...
    assert scores.mixture_bits_per_byte([0.5, 0.5]) <= (members[0] + members[1]) / 2 + 1e-12
    # ... and the span-level geometric pool is exactly that mean, whatever the spans: no gain.
    x = scores.matrix()
    geometric = -float((0.5 * x[:, 0] + 0.5 * x[:, 1]).sum()) / math.log(2) / scores.n_bytes
    assert geometric == pytest.approx((members[0] + members[1]) / 2, rel=1e-12)


@given(st.lists(st.tuples(st.floats(-12, 0), st.floats(-12, 0), st.floats(-12, 0)), min_size=1, max_size=40))
def test_em_weights_beat_every_weight_on_a_grid(rows):
    x = torch.tensor(rows, dtype=torch.float64)
    weights = fit_mixture_weights(x)
    assert sum(weights) == pytest.approx(1.0) and min(weights) >= 0

    def likelihood(w):
        return float(torch.logsumexp(x + torch.tensor(w, dtype=torch.float64).clamp_min(1e-300).log(), dim=1).sum())

    best = likelihood(weights)
    steps = [i / 10 for i in range(11)]
    grid = [(a, b, 1 - a - b) for a in steps for b in steps if a + b <= 1 + 1e-9]
    # The likelihood is concave and EM ends near its maximum, slowly where a weight tends to 0: a
    # weight whose model is worse by d nats per span shrinks by e^-d per step, so after k steps the
    # gap is at most max_d d e^(-k d) = 1/(e k) nats per span (k = 10,000: 3.7e-5).
    assert all(likelihood([max(0.0, v) for v in w]) <= best + len(rows) / (math.e * 10_000) for w in grid)


def test_span_helpers_refuse_misaligned_input():
    assert common_boundaries([3, 6, 16], [3, 9, 16]) == [3, 16]
    with pytest.raises(ValueError, match="is not the end of a token"):
        span_log_probs([-1.0, -1.0], [4, 8], [6])
    with pytest.raises(ValueError, match="mixture weights must be >= 0"):
        score_spans.__globals__["TextScores"]([[[-1.0], [-2.0]]], 1).mixture_bits_per_byte([1, -1])


def test_generation_scores_are_what_the_ensemble_generates_from(pair):
    """Stepping the real LogOddsEnsemble over the primary's tokens of the text gives, at every
    position, the mixture of the scores' targets (weights 0.6 / 0.4)."""
    (primary, member), (tokenizer, member_tokenizer) = pair
    scores = generation_scores(primary, tokenizer, [member], [member_tokenizer], [TEXT], product="logprob",
                               product_weights=[(1.0, 0.5)])
    codec = TextCodec.of(tokenizer)
    ids = codec.start_ids + codec.encode(TEXT)
    mixture = LogOddsEnsemble(member, [0.6, 0.4], "mixture", tokenizer=[tokenizer, member_tokenizer])
    product = LogOddsEnsemble(member, [1.0, 0.5], "logprob", tokenizer=[tokenizer, member_tokenizer])
    with torch.no_grad():
        logits = primary(torch.tensor([ids])).logits[0]
    ours_mixture, ours_product = [], []
    for k in range(len(codec.start_ids), len(ids)):
        prefix = torch.tensor([ids[:k]])
        ours_mixture.append(float(mixture(prefix, logits[k - 1 : k])[0, ids[k]]))
        ours_product.append(float(product(prefix, logits[k - 1 : k])[0, ids[k]]))
    expected = torch.logsumexp(scores.targets + torch.tensor([0.6, 0.4], dtype=torch.float64).log(), dim=1)
    # Two float32 paths to the same log-probs (a full forward vs cached steps): ~1e-5 apart.
    assert ours_mixture == pytest.approx(expected.tolist(), abs=1e-4)
    assert ours_product == pytest.approx(scores.product[:, 0].tolist(), abs=1e-4)
    bits = -math.fsum(ours_mixture) / math.log(2) / len(TEXT.encode())
    assert scores.bits_per_byte([0.6, 0.4]) == pytest.approx(bits, abs=1e-5)


def test_score_text_fits_on_the_fit_text_only(pair):
    models, tokenizers = pair
    names = ["gpt2", "gemma"]
    result = score_text(models, tokenizers, TEXT, fit_texts=FIT, names=names)
    fitted = fit_mixture_weights(score_spans(models, [TextCodec.of(t) for t in tokenizers], [FIT]).matrix())
    assert result["weights"] == pytest.approx(fitted)
    assert set(result["members"]) == set(names) and result["bytes"] == len(TEXT.encode())
    given = score_text(models, tokenizers, TEXT, weights=[3, 1], names=names)
    assert given["weights"] == [0.75, 0.25]
    with pytest.raises(ValueError, match="never the scored text itself"):
        score_text(models, tokenizers, TEXT)
    with pytest.raises(ValueError, match="weights >= 0"):
        score_text(models, tokenizers, TEXT, weights=[1, -1])
    with pytest.raises(ValueError, match="with one member"):
        score_text(models * 2, tokenizers * 2, TEXT, weights=[1, 1, 1, 1], combine="logprob")


def test_text_a_tokenizer_cannot_spell_is_named(pair):
    models, tokenizers = pair
    with pytest.raises(ValueError, match=r"cannot encode the text 'a \u2581 b' losslessly"):
        score_text(models, tokenizers, "a \u2581 b", weights=[1, 1])


def test_the_command_prints_one_json_object(run, tiny_gpt2_path, tmp_path):
    held, fit = tmp_path / "held.txt", tmp_path / "fit.txt"
    held.write_text(TEXT + "\n\x1e\n" + FIT[::-1], encoding="utf-8")
    fit.write_text(FIT, encoding="utf-8")
    member = tiny_gemma_path()
    status, out, err = run("score-text", held, "--model", tiny_gpt2_path, "--ensemble", member, "--fit", fit,
                           "--json", "--generation")
    assert status == 0, err
    result = json.loads(out)
    assert {"bytes", "members", "ensemble", "weights"} <= set(result) and len(result["members"]) == 2
    assert result["bytes"] == len(TEXT.encode()) + len(FIT.encode()) and "generation" in result
    status, out, err = run("score-text", held, "--model", tiny_gpt2_path, "--ensemble", f"{member}:0.5", "--combine",
                           "logprob", "--json")
    assert status == 0 and json.loads(out)["weights"] == [1.0, 0.5]
    status, _, err = run("score-text", held, "--model", tiny_gpt2_path, "--ensemble", member, "--calibrate")
    assert status == 2 and "--calibrate: needs --fit" in err
