"""Ensembles of models that do not share a tokenizer, inside real generate() calls, exact against a
slow reference that re-encodes the text and reruns every member on all of it at every step.

The pair: the tiny GPT-2 (byte-level BPE, 2,000 tokens) and the tiny Gemma-3-style model (its own
SentencePiece-style BPE with byte fallback, 1,756 tokens, a sliding-window layer of 8 tokens), in
both roles. The reference is a wrapper *model*: at each step, for every row, it spells the primary's
real tokens as text, encodes that text with the member's tokenizer, runs the member on all of it
without a cache, takes its distributions before and after its last token and carries them over
to the primary's vocabulary with the same formula (``member_distribution``, tested on its own in
test_vocabulary_map.py), then combines in float64. Same tokens, same output_scores within 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from test_ensemble_generate import SETTINGS, assert_same, generate, reference_combine, reference_generate

from transformers.modeling_outputs import CausalLMOutputWithPast

from logit_processors import Chain, LogOddsEnsemble, TokenMask
from logit_processors.models import load_tiny_gemma
from logit_processors.runtime.aligned_members import member_distribution, split_unfinished_character
from logit_processors.runtime.text_codec import TextCodec
from logit_processors.runtime.vocabulary_map import VocabularyMap

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

PROMPTS = ["The if statement", "Exceptions are raised when", "A function definition"]


@pytest.fixture(scope="module")
def pair(tiny_gpt2):
    gpt2, gpt2_tokenizer = tiny_gpt2
    gemma, gemma_tokenizer = load_tiny_gemma()
    return {"gpt2": (gpt2, gpt2_tokenizer), "gemma": (gemma, gemma_tokenizer)}


def inputs_for(tokenizer, prompts=PROMPTS):
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()  # left-padded
    return batch


def reference_member(member, primary_tokenizer, member_tokenizer, temperature=1.0):
    """The member's log-probs over the primary's tokens, from scratch: ``f(input_ids, mask) -> [B, n]``."""
    primary, codec = TextCodec.of(primary_tokenizer), TextCodec.of(member_tokenizer)
    vmap = VocabularyMap.of(primary, codec)

    def distribution(input_ids, attention_mask, primary_log_probs):
        rows = []
        for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
            text, pending = split_unfinished_character(primary.text_of([i for i, m in zip(ids, mask) if m]))
            tokens = codec.start_ids + codec.encode(text)
            with torch.no_grad():
                logits = member(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].double()
            q = torch.log_softmax(logits / temperature, dim=-1).float()
            tail = tokens[-1] if len(tokens) > len(codec.start_ids) else None
            rows.append(member_distribution(vmap, q[-2] if tail is not None else q[-1], q[-1], tail, pending,
                                            primary_log_probs[row]))
        return torch.stack(rows)

    return distribution


def aligned_reference(primary, member_distribution_fn, combine_fn, n_tokens, primary_temperature=1.0):
    """A model of the primary's class whose next-token logits are the combination, from scratch:
    the primary's logits, and the member's distribution on the re-encoded text, combined in float64."""

    class AlignedReference(type(primary)):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            logits = primary(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).logits[:, -1]
            log_p = torch.log_softmax(logits[:, :n_tokens].double() / primary_temperature, dim=-1)
            member = member_distribution_fn(input_ids, attention_mask, log_p)
            out = torch.full((input_ids.shape[0], 1, logits.shape[-1]), float("-inf"))
            out[:, 0, :n_tokens] = combine_fn([logits, member]).float()
            return CausalLMOutputWithPast(logits=out)

    reference = AlignedReference(primary.config)
    reference.generation_config = primary.generation_config
    return reference.eval()


def reference_mixture(logits, weights, n_tokens):
    log_p = [torch.log_softmax(z[..., :n_tokens].double(), dim=-1) for z in logits]
    total = torch.logsumexp(torch.stack([lp + torch.log(torch.tensor(w / sum(weights))) for lp, w in zip(log_p, weights)]), 0)
    return torch.log_softmax(total.masked_fill(torch.isneginf(log_p[0]), float("-inf")), dim=-1)


def combine_fn(combine, weights, temperatures, n):
    if combine == "mixture":
        return lambda z: reference_mixture([z[0] / temperatures[0], z[1]], weights, n)
    # The member comes as log-probs with its temperature applied: temperature 1 here.
    return lambda z: reference_combine(z, weights, combine, (temperatures[0], 1.0), n)


def run_both(pair, primary_name, combine, settings, weights=(0.6, 0.7), temperatures=(1.0, 1.3), **generate_kwargs):
    (primary, primary_tokenizer), (member, member_tokenizer) = pair[primary_name], pair[
        "gemma" if primary_name == "gpt2" else "gpt2"]
    n = len(primary_tokenizer)
    ensemble = LogOddsEnsemble(member, weights, combine=combine, temperatures=temperatures,
                               tokenizer=[primary_tokenizer, member_tokenizer])
    reference = aligned_reference(primary, reference_member(member, primary_tokenizer, member_tokenizer, temperatures[1]),
                                 combine_fn(combine, weights, temperatures, n), n, temperatures[0])
    inputs = inputs_for(primary_tokenizer)
    ours = generate(primary, inputs, [ensemble], **settings, **generate_kwargs)
    ref = reference_generate(reference, inputs, **settings, **generate_kwargs)
    return ensemble, ours, ref


@pytest.mark.parametrize("combine", ["mixture", "logprob", "logodds"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_gpt2_primary_with_a_gemma_member_matches_the_reference(pair, combine, setting):
    ensemble, ours, ref = run_both(pair, "gpt2", combine, SETTINGS[setting])
    assert_same(ours, ref)
    counts = ensemble.counts
    assert counts["prefill"] == 1 and counts["continue"] == len(ours.scores) - 1
    if "beam" in setting:
        assert counts["reorder"] > 0


@pytest.mark.parametrize("combine", ["mixture", "logprob"])
@pytest.mark.parametrize("setting", ["greedy", "beam4", "return2"])
def test_gemma_primary_with_a_gpt2_member_matches_the_reference(pair, combine, setting):
    ensemble, ours, ref = run_both(pair, "gemma", combine, SETTINGS[setting])
    assert_same(ours, ref)


def test_long_generation_rolls_back_and_crosses_the_sliding_window(pair):
    """40 new tokens: the member's cache outgrows its 8-token sliding window many times over, and
    re-encoding the text rolls tokens back (its cache has holes) while staying exact."""
    ensemble, ours, ref = run_both(pair, "gpt2", "mixture", SETTINGS["sampling"], max_new_tokens=40)
    assert_same(ours, ref)
    assert ensemble.counts["rolled_back"] > 0 and ensemble.counts["fed"] > 40


def test_the_member_changes_the_output_and_runs_incrementally(pair):
    (primary, tokenizer), (member, member_tokenizer) = pair["gpt2"], pair["gemma"]
    inputs = inputs_for(tokenizer)
    alone = generate(primary, inputs, [], do_sample=False)
    ensemble = LogOddsEnsemble(member, [0.5, 0.5], "mixture", tokenizer=[tokenizer, member_tokenizer])
    out = generate(primary, inputs, [ensemble], do_sample=False)
    assert not torch.equal(alone.sequences, out.sequences)
    # One member token per row and step on average, not the whole prefix again.
    prompt_tokens = sum(len(TextCodec.of(member_tokenizer).encode(p)) + 1 for p in PROMPTS)
    assert ensemble.counts["fed"] - prompt_tokens <= 2 * 3 * len(out.scores)


def test_masked_tokens_stay_masked_across_tokenizers(pair):
    (primary, tokenizer), (member, member_tokenizer) = pair["gpt2"], pair["gemma"]
    banned = [tokenizer.encode(" the")[0], tokenizer.encode(" is")[0], tokenizer.eos_token_id]
    inputs = inputs_for(tokenizer)
    for combine in ("mixture", "logprob", "logodds"):
        ensemble = LogOddsEnsemble(member, [1.0, 0.5], combine, tokenizer=[tokenizer, member_tokenizer])
        out = generate(primary, inputs, Chain(TokenMask(deny=banned), ensemble), do_sample=True, max_new_tokens=16)
        for scores in out.scores:
            assert torch.isneginf(scores[:, banned]).all() and not torch.isnan(scores).any()


def test_reusable_across_calls_and_batches(pair):
    (primary, tokenizer), (member, member_tokenizer) = pair["gpt2"], pair["gemma"]
    ensemble = LogOddsEnsemble(member, [0.6, 0.4], "mixture", tokenizer=[tokenizer, member_tokenizer])
    batches = [inputs_for(tokenizer), tokenizer(["Exceptions"], return_tensors="pt")]
    for batch, settings in [(batches[0], SETTINGS["greedy"]), (batches[1], SETTINGS["beam4"]),
                            (batches[0], SETTINGS["return2"]), (batches[1], SETTINGS["greedy"])]:
        shared = generate(primary, batch, [ensemble], **settings)
        fresh = generate(primary, batch, [LogOddsEnsemble(member, [0.6, 0.4], "mixture",
                                                          tokenizer=[tokenizer, member_tokenizer])], **settings)
        assert_same(shared, fresh, atol=1e-6)


def test_text_the_member_cannot_encode_is_named(pair):
    (primary, tokenizer), (member, member_tokenizer) = pair["gpt2"], pair["gemma"]
    ensemble = LogOddsEnsemble(member, [0.5, 0.5], "mixture", tokenizer=[tokenizer, member_tokenizer])
    inputs = tokenizer(["The \u2581 sign"], return_tensors="pt")  # '▁' is the member's own space
    with pytest.raises(ValueError, match=r"cannot encode the text 'The ▁ sign' losslessly"):
        generate(primary, inputs, [ensemble], max_new_tokens=2)


def test_vocabulary_check_tells_same_aligned_and_incompatible(pair):
    from logit_processors.ensemble.combine import tokenizer_relation

    tokenizer, other = pair["gpt2"][1], pair["gemma"][1]
    assert tokenizer_relation(tokenizer, tokenizer) == "same"
    assert tokenizer_relation(tokenizer, other) == "aligned"

    class NotFast:  # a tokenizer whose tokens' bytes cannot be read
        def get_vocab(self):
            return {"a": 0}

        added_tokens_decoder = {}

        def __len__(self):
            return 1

    with pytest.raises(ValueError, match="neither id by id .* nor on text"):
        tokenizer_relation(tokenizer, NotFast(), member_name="member #0")


def test_the_command_line_ensembles_a_member_with_another_tokenizer(run, tiny_gpt2_path):
    from logit_processors.models import tiny_gemma_path

    member = tiny_gemma_path()
    status, out, err = run("generate", "The if statement", "--model", tiny_gpt2_path, "--no-chat-template", "--greedy",
                           "--max-new-tokens", "6", "--ensemble", f"{member}:0.5", "--combine", "mixture")
    assert status == 0 and out.strip(), err
    status, _, err = run("generate", "The \u2581 sign", "--model", tiny_gpt2_path, "--no-chat-template",
                         "--max-new-tokens", "2", "--ensemble", member)
    assert status == 2 and "cannot encode the text 'The ▁ sign' losslessly" in err and len(err.strip().splitlines()) == 1
