"""Adaptive mixture weights inside real generate() calls and in score_text, against slow references.

The generation reference is a wrapper *model* (as in test_ensemble_generate.py): at every step,
for every row, it recomputes from scratch, at every position since the prompt, each model's
log-probabilities (the member's carried to the primary's tokens for another tokenizer, with
test_ensemble_tokenizers.py's reference), replays that row's posterior over its own generated
tokens with the plain float64 reference of test_adaptive_weights.py, and mixes in float64. Beam
search reorders rows between steps: the reference knows nothing of that (each row's history is
its own), so equal output_scores mean the processor's posteriors followed the beams.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_adaptive_weights import RATES, reference_grid, reference_prior, reference_update, reference_weights
from test_ensemble_generate import SETTINGS, assert_same, generate, reference_generate
from test_ensemble_tokenizers import reference_member
from transformers.modeling_outputs import CausalLMOutputWithPast

from logit_processors import LogOddsEnsemble
from logit_processors.ensemble.adaptive import AdaptiveMixture
from logit_processors.ensemble.byte_spans import LOG2, score_spans
from logit_processors.ensemble.generation_score import generation_scores
from logit_processors.ensemble.score_text import score_text
from logit_processors.models import load_tiny_gemma, tiny_gemma_path
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2
from logit_processors.models.tiny_gpt2 import tiny_gpt2_path as build_tiny_gpt2_path
from logit_processors.runtime.text_codec import TextCodec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

PROMPTS = ["The if statement", "Exceptions are raised when", "A function definition"]
WEIGHTS = (0.3, 0.7)


@pytest.fixture(scope="module")
def models(tiny_gpt2):
    return {"gpt2": tiny_gpt2, "gpt2 seed 1": load_tiny_gpt2(seed=1), "gemma": load_tiny_gemma()}


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def last_log_probs(model, ids, mask, n):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).logits
    return torch.log_softmax(logits[:, -1, :n].double(), dim=-1)


def sources(primary, member, primary_tokenizer, member_tokenizer):
    """``f(ids, mask) -> [2, B, n]``: the primary's and the member's log-probs over the primary's tokens."""
    n = len(primary_tokenizer)
    aligned = reference_member(member, primary_tokenizer, member_tokenizer) if member_tokenizer else None

    def log_probs(ids, mask):
        primary_lp = last_log_probs(primary, ids, mask, n)
        member_lp = (aligned(ids, mask, primary_lp.float()).double() if aligned
                     else last_log_probs(member, ids, mask, n))
        return torch.stack([primary_lp, torch.log_softmax(member_lp, dim=-1)])

    return log_probs


def adaptive_reference(primary, log_probs_fn, n_tokens, prompt_length, center=WEIGHTS):
    grid = reference_grid()

    class AdaptiveReference(type(primary)):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            steps = {t: log_probs_fn(input_ids[:, :t], mask[:, :t])
                     for t in range(prompt_length, input_ids.shape[1] + 1)}
            out = torch.full((input_ids.shape[0], 1, primary.config.vocab_size), float("-inf"))
            for row in range(input_ids.shape[0]):
                posterior = reference_prior(grid, RATES, center)
                for t in range(prompt_length, input_ids.shape[1]):  # the tokens this row generated
                    token = int(input_ids[row, t])
                    posterior, _ = reference_update(posterior, steps[t][:, row, token].tolist(), grid, RATES)
                w = torch.tensor(reference_weights(posterior, grid), dtype=torch.float64)
                mixed = torch.logsumexp(steps[input_ids.shape[1]][:, row] + w.log()[:, None], dim=0)
                out[row, 0, :n_tokens] = torch.log_softmax(mixed, dim=-1).float()
            return CausalLMOutputWithPast(logits=out)

    reference = AdaptiveReference(primary.config)
    reference.generation_config = primary.generation_config
    return reference.eval()


def run_both(models, primary_name, member_name, setting, max_new_tokens=8):
    (primary, primary_tokenizer), (member, member_tokenizer) = models[primary_name], models[member_name]
    aligned = member_name == "gemma" or primary_name == "gemma"
    ensemble = LogOddsEnsemble(member, list(WEIGHTS), "mixture", adaptive=True,
                               tokenizer=[primary_tokenizer, member_tokenizer] if aligned else primary_tokenizer)
    inputs = primary_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    log_probs = sources(primary, member, primary_tokenizer, member_tokenizer if aligned else None)
    reference = adaptive_reference(primary, log_probs, len(primary_tokenizer), inputs["input_ids"].shape[1])
    ours = generate(primary, inputs, [ensemble], max_new_tokens=max_new_tokens, **SETTINGS[setting])
    ref = reference_generate(reference, inputs, max_new_tokens=max_new_tokens, **SETTINGS[setting])
    return ensemble, ours, ref


# atol as in test_ensemble_generate.py (float32 log-probs by two code paths, <= 6e-5 apart): the
# posterior is a smooth function of the summed log-probs, and its weights enter the mixture's
# log-probabilities with a factor <= 1 (d log sum_i w_i p_i / d w_i = p_i / p_mix, times dw_i), so
# the per-step errors of up to 8 replayed steps move it by a few 1e-5 more.
ATOL = 2e-4


@pytest.mark.parametrize("setting", ["greedy", "sampling", "beam4"])
def test_same_tokenizer_adaptive_matches_the_reference(models, setting):
    ensemble, ours, ref = run_both(models, "gpt2", "gpt2 seed 1", setting)
    assert_same(ours, ref, atol=ATOL)
    if setting == "beam4":
        assert ensemble.counts["reorder"] > 0


@pytest.mark.parametrize("setting", ["greedy", "beam4"])
def test_another_tokenizer_adaptive_matches_the_reference(models, setting):
    _, ours, ref = run_both(models, "gpt2", "gemma", setting, max_new_tokens=6)
    assert_same(ours, ref, atol=ATOL)


def test_weights_learn_per_row_and_each_call_starts_from_the_prior(models):
    (primary, tokenizer), (member, _) = models["gpt2"], models["gpt2 seed 1"]
    ensemble = LogOddsEnsemble(member, list(WEIGHTS), "mixture", adaptive=True, tokenizer=tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    generate(primary, inputs, [ensemble], max_new_tokens=10, do_sample=False)
    learned = ensemble.adaptive_weights.clone()
    assert learned.shape == (3, 2) and not torch.allclose(learned[0], learned[1])  # rows learn apart
    prior = AdaptiveMixture.centered_at(WEIGHTS)
    generate(primary, inputs, [ensemble], max_new_tokens=1, do_sample=False)  # a new call: from the prior
    torch.testing.assert_close(ensemble.adaptive_weights, prior.weights(prior.start(3)))
    generate(primary, inputs, [ensemble], max_new_tokens=10, do_sample=False)  # the same again
    torch.testing.assert_close(ensemble.adaptive_weights, learned)
    assert "adaptive=True" in repr(ensemble)


def test_identical_members_generate_the_primary_alone(models):
    primary, tokenizer = models["gpt2"]
    ensemble = LogOddsEnsemble(primary, [0.5, 0.5], "mixture", adaptive=True, tokenizer=tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    ours = generate(primary, inputs, [ensemble], max_new_tokens=8, do_sample=False)
    alone = generate(primary, inputs, [], max_new_tokens=8, do_sample=False)
    assert torch.equal(ours.sequences, alone.sequences)
    n = len(tokenizer)  # LM-head columns beyond the tokenizer are masked by the ensemble
    for a, b in zip(ours.scores, alone.scores, strict=True):
        # The member's cached logits and the primary's: two code paths, a few float32 ulps of |z| apart.
        torch.testing.assert_close(a[:, :n], torch.log_softmax(b[:, :n], dim=-1), atol=5e-5, rtol=0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"combine": "logprob", "adaptive": True}, "adaptive needs combine='mixture'"),
    ({"combine": "mixture", "adaptive": "yes"}, "adaptive must be True, False or an AdaptiveMixture"),
    ({"combine": "mixture", "adaptive": AdaptiveMixture(3)}, "adaptive mixes 3 models but the ensemble has 2"),
])
def test_bad_adaptive_arguments_name_themselves(models, kwargs, fragment):
    member, tokenizer = models["gpt2 seed 1"]
    with pytest.raises(ValueError, match=fragment):
        LogOddsEnsemble(member, [0.5, 0.5], tokenizer=tokenizer, **kwargs)


# --------------------------------------------------------------------------------------------
# score_text


TEXTS = ["The if statement, café: return x  # done.", "Exceptions are raised when an error occurs."]
FIT = "The try statement handles exceptions; the with statement manages a context."


def test_score_text_adaptive_is_the_mixture_run_over_each_documents_spans(models):
    names = ["gpt2", "gemma"]
    pair, tokenizers = [models[n][0] for n in names], [models[n][1] for n in names]
    result = score_text(pair, tokenizers, TEXTS, fit_texts=FIT, adaptive=True, generation=True, names=names)
    plain = score_text(pair, tokenizers, TEXTS, fit_texts=FIT, names=names)
    assert {k: v for k, v in result.items() if k not in ("adaptive", "generation")} == plain  # keys kept
    codecs = [TextCodec.of(t) for t in tokenizers]
    held, fit = score_spans(pair, codecs, TEXTS), score_spans(pair, codecs, [FIT])
    mixture = AdaptiveMixture.fitted(fit.matrix())
    nats = sum(float(mixture.code_lengths(x)[0].sum()) for x in held.per_document())
    assert result["adaptive"]["ensemble"] == pytest.approx(nats / LOG2 / held.n_bytes, rel=1e-12)
    assert len(result["adaptive"]["final_weights"]) == 2 and result["adaptive"]["restart"] == "per document"
    # Generation mode: the same code over the primary's tokens, teacher-forced, each document on its own.
    scores = generation_scores(pair[0], tokenizers[0], [pair[1]], [tokenizers[1]], TEXTS, product=None)
    fit_scores = generation_scores(pair[0], tokenizers[0], [pair[1]], [tokenizers[1]], [FIT], product=None)
    mixture = AdaptiveMixture.fitted(fit_scores.targets)
    nats = sum(float(mixture.code_lengths(x)[0].sum()) for x in scores.per_document())
    assert result["generation"]["adaptive"]["ensemble"] == pytest.approx(nats / LOG2 / scores.n_bytes, rel=1e-12)
    assert sum(len(x) for x in scores.per_document()) == scores.targets.shape[0]
    with pytest.raises(ValueError, match="use combine='mixture' with adaptive"):
        score_text(pair, tokenizers, TEXTS, weights=[1, 1], combine="logprob", adaptive=True)


def test_score_text_command_adaptive(run, tiny_gpt2_path, tmp_path):
    held, fit = tmp_path / "held.txt", tmp_path / "fit.txt"
    held.write_text("\n\x1e\n".join(TEXTS), encoding="utf-8")
    fit.write_text(FIT, encoding="utf-8")
    args = ("score-text", held, "--model", tiny_gpt2_path, "--ensemble", tiny_gemma_path())
    status, out, err = run(*args, "--fit", fit, "--adaptive", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert {"bytes", "members", "ensemble", "weights", "adaptive"} <= set(result)
    assert len(result["adaptive"]["final_weights"]) == 2
    status, out, err = run(*args, "--fit", fit, "--adaptive")
    assert status == 0 and "adaptive mixture" in out
    status, _, err = run(*args, "--fit", fit, "--adaptive", "--combine", "logprob")
    assert status == 2 and "--adaptive" in err


def test_generate_command_adaptive(run, tiny_gpt2_path):
    other = str(build_tiny_gpt2_path(seed=1))
    status, out, err = run("generate", "The if statement", "--model", tiny_gpt2_path, "--no-chat-template",
                           "--greedy", "--max-new-tokens", 6, "--ensemble", f"{other}:0.5", "--adaptive")
    assert status == 0 and out.strip(), err
    status, _, err = run("generate", "The if statement", "--model", tiny_gpt2_path, "--adaptive")
    assert status == 2 and "--adaptive needs --ensemble" in err
    status, _, err = run("generate", "The if statement", "--model", tiny_gpt2_path, "--ensemble", f"{other}:0.5",
                         "--adaptive", "--combine", "logodds")
    assert status == 2 and "--combine mixture" in err
