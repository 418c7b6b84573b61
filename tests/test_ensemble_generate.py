"""LogOddsEnsemble and ContrastiveDecoding inside real generate() calls, exact against a slow reference.

The reference is a wrapper *model*: at every step it runs the primary and every member on the
whole sequence (no cache), with the attention mask and position ids generate() gives it, and
combines their last-position logits with an independent float64 implementation of the formulas.
Used with the same generate() settings (use_cache=False), it must give the same tokens and the
same output_scores (within 1e-4, float32) as the primary with the processor: greedy, sampling
with a seed, beam search (num_beams=4), num_return_sequences=2 and a left-padded batch. The models
are two tiny GPT-2s trained from different seeds (same tokenizer, different weights).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from logit_processors import Chain, ContrastiveDecoding, LogOddsEnsemble, TokenMask
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

NEG_INF = float("-inf")
PROMPTS = ["The if statement", "Exceptions are raised when", "A function definition"]


@pytest.fixture(scope="module")
def models(tiny_gpt2):
    primary, tokenizer = tiny_gpt2
    member, member_tokenizer = load_tiny_gpt2(seed=1)
    return primary, member, tokenizer, member_tokenizer


@pytest.fixture(scope="module")
def inputs(models):
    tokenizer = models[2]
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)  # left-padded
    assert (batch["attention_mask"] == 0).any()
    return batch


# --------------------------------------------------------------------------------------------
# The slow reference


def reference_combine(logits, weights, combine, temperatures, n_tokens, prior=None) -> torch.Tensor:
    """The ensemble module's formulas, naively in float64, over the first n_tokens columns."""

    def evidence(z):
        log_p = torch.log_softmax(z[..., :n_tokens].double(), dim=-1)
        return log_p - torch.log(-torch.expm1(log_p)) if combine == "logodds" else log_p  # log p - log(1 - p)

    total = sum(w * evidence(z / t) for z, w, t in zip(logits, weights, temperatures, strict=True) if w != 0)
    if prior is not None:
        total = total - (sum(weights) - 1) * evidence(prior)
    if combine == "logodds":
        total = torch.nn.functional.logsigmoid(total)
    return torch.log_softmax(total, dim=-1)


def reference_contrastive(expert, amateur, alpha, plausibility, n_tokens) -> torch.Tensor:
    log_e = torch.log_softmax(expert[:, :n_tokens].double(), dim=-1)
    log_a = torch.log_softmax(amateur[:, :n_tokens].double(), dim=-1)
    keep = log_e.exp() >= plausibility * log_e.exp().amax(dim=-1, keepdim=True)
    return (log_e - alpha * log_a).masked_fill(~keep, NEG_INF)


class Reference(GPT2LMHeadModel):
    """A model whose next-token logits are the combination, recomputed from scratch every step."""

    def __init__(self, models, combine_fn, n_tokens):
        super().__init__(models[0].config)
        self.models = list(models)  # a plain list: not registered as submodules
        self.combine_fn = combine_fn
        self.n_tokens = n_tokens
        self.generation_config = models[0].generation_config
        self.eval()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        logits = [
            m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits[:, -1]
            for m in self.models
        ]
        out = torch.full((input_ids.shape[0], 1, logits[0].shape[-1]), NEG_INF)
        out[:, 0, : self.n_tokens] = self.combine_fn(logits).float()
        return CausalLMOutputWithCrossAttentions(logits=out)


def generate(model, inputs, processors, seed=0, max_new_tokens=12, **settings):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(
            **inputs, logits_processor=processors, max_new_tokens=max_new_tokens,
            top_k=None, top_p=None, temperature=None,
            output_scores=True, return_dict_in_generate=True, **settings,
        )


def reference_generate(reference, inputs, **settings):
    return generate(reference, inputs, [], use_cache=False, **settings)


# atol: the processor's float32 ensemble of cached logits against the float64 formulas on uncached
# ones: logits by two code paths ~sqrt(k) eps |z| apart, twice that in log-probs, plus a few
# roundings of log-scores (<= 6e-5 for the GPT-2-sized heads below, |z| <= ~53, k = 16).
def assert_same(ours, ref, atol=1e-4):
    assert torch.equal(ours.sequences, ref.sequences), (ours.sequences, ref.sequences)
    assert len(ours.scores) == len(ref.scores)
    for step, (a, b) in enumerate(zip(ours.scores, ref.scores, strict=True)):
        assert not torch.isnan(a).any()
        assert torch.equal(torch.isneginf(a), torch.isneginf(b)), f"step {step}: masks differ"
        finite = torch.isfinite(b)
        torch.testing.assert_close(a[finite], b[finite], atol=atol, rtol=0, msg=f"step {step}")


SETTINGS = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True),
    "beam4": dict(do_sample=False, num_beams=4),
    "return2": dict(do_sample=True, num_return_sequences=2),
    "beam4_return2": dict(do_sample=False, num_beams=4, num_return_sequences=2),
}


# --------------------------------------------------------------------------------------------
# Exact against the reference


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_ensemble_matches_the_reference(models, inputs, combine, setting):
    primary, member, tokenizer, member_tokenizer = models
    weights, temperatures = (0.6, 0.7), (1.0, 1.3)
    ensemble = LogOddsEnsemble(
        [member], weights, combine=combine, temperatures=temperatures, tokenizer=[tokenizer, member_tokenizer]
    )
    n = len(tokenizer)
    reference = Reference([primary, member], lambda z: reference_combine(z, weights, combine, temperatures, n), n)
    ours = generate(primary, inputs, [ensemble], **SETTINGS[setting])
    assert_same(ours, reference_generate(reference, inputs, **SETTINGS[setting]))
    # Served incrementally: one prefill, then one new token per row and step.
    assert ensemble.counts["prefill"] == 1
    assert ensemble.counts["continue"] == len(ours.scores) - 1
    if "beam" in setting:
        assert ensemble.counts["reorder"] > 0  # beams moved, and the caches followed them


def test_the_ensemble_changes_the_output(models, inputs):
    primary, member, tokenizer, _ = models
    alone = generate(primary, inputs, [])
    ensemble = generate(primary, inputs, [LogOddsEnsemble(member, [0.5, 0.5], tokenizer=tokenizer)])
    assert not torch.equal(alone.sequences, ensemble.sequences)


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
def test_prior_model_and_fixed_prior_match_the_reference(models, inputs, combine):
    primary, member, tokenizer, _ = models
    n = len(tokenizer)
    weights = (1.0, 0.8)
    # Prior: the second tiny GPT-2 at a high temperature (a broad "base rate" model), and a fixed
    # unigram-like distribution.
    prior_model = copy.deepcopy(member)
    with torch.no_grad():
        prior_model.lm_head.weight.mul_(0.3)  # tied: also scales the input embeddings; just another model
    reference = Reference(
        [primary, member, prior_model],
        lambda z: reference_combine(z[:2], weights, combine, (1.0, 1.0), n, prior=z[2]),
        n,
    )
    ours = generate(primary, inputs, [LogOddsEnsemble(member, weights, combine, prior=prior_model, tokenizer=tokenizer)])
    assert_same(ours, reference_generate(reference, inputs))

    fixed = torch.softmax(torch.randn(n, generator=torch.Generator().manual_seed(0)), dim=-1)
    reference = Reference(
        [primary, member],
        lambda z: reference_combine(z, weights, combine, (1.0, 1.0), n, prior=fixed.log()[None, :]),
        n,
    )
    ours = generate(primary, inputs, [LogOddsEnsemble(member, weights, combine, prior=fixed, tokenizer=tokenizer)])
    assert_same(ours, reference_generate(reference, inputs))


@pytest.mark.parametrize("setting", ["greedy", "sampling", "return2"])
def test_contrastive_decoding_matches_the_reference(models, inputs, setting):
    # Beam search is left out: generate() log-softmaxes a model's output before beam scoring,
    # while the processor's score is deliberately unnormalized (beam search then sums the
    # paper's objective), so the two beam searches rank differently by design.
    primary, amateur, tokenizer, _ = models
    cd = ContrastiveDecoding(amateur, alpha=0.5, plausibility=0.1, tokenizer=tokenizer)
    n = len(tokenizer)
    reference = Reference([primary, amateur], lambda z: reference_contrastive(z[0], z[1], 0.5, 0.1, n), n)
    ours = generate(primary, inputs, [cd], **SETTINGS[setting])
    assert_same(ours, reference_generate(reference, inputs, **SETTINGS[setting]))
    assert cd.counts["prefill"] == 1


def test_contrastive_decoding_follows_beams(models, inputs):
    primary, amateur, tokenizer, _ = models
    cd = ContrastiveDecoding(amateur, alpha=0.5, tokenizer=tokenizer)
    out = generate(primary, inputs, [cd], num_beams=4)
    assert cd.counts["prefill"] == 1 and cd.counts["reorder"] > 0
    assert all(not torch.isnan(s).any() for s in out.scores)


# --------------------------------------------------------------------------------------------
# Identities


@pytest.mark.parametrize("setting", ["greedy", "sampling", "beam4"])
def test_weights_one_zero_reproduce_the_primary_token_for_token(models, inputs, setting):
    primary, member, tokenizer, _ = models
    alone = generate(primary, inputs, [], **SETTINGS[setting])
    for combine in ("logprob", "logodds"):
        ensemble = LogOddsEnsemble(member, [1.0, 0.0], combine, tokenizer=tokenizer)
        ours = generate(primary, inputs, [ensemble], **SETTINGS[setting])
        assert torch.equal(ours.sequences, alone.sequences)
        assert ensemble.counts["prefill"] == 0  # a member with weight 0 is not even run


@pytest.mark.parametrize("setting", ["greedy", "sampling", "beam4"])
def test_same_model_twice_at_half_weight_reproduces_the_primary_distribution(models, inputs, setting):
    primary, _, tokenizer, _ = models
    n = len(tokenizer)
    alone = generate(primary, inputs, [], **SETTINGS[setting])
    ensemble = LogOddsEnsemble(primary, [0.5, 0.5], "logprob", tokenizer=tokenizer)
    ours = generate(primary, inputs, [ensemble], **SETTINGS[setting])
    assert torch.equal(ours.sequences, alone.sequences)
    for a, b in zip(ours.scores, alone.scores, strict=True):
        # The primary's distribution over the tokenizer's tokens (the LM head's padding columns masked).
        # The member's copy runs through CachedMembers (a last-position LM head, its own cache):
        # logits |z| <= ~10 by another code path, ~sqrt(k) eps |z| ~ 1e-5 apart (k <= 256), log-probs
        # up to twice that; plus a few ulps of log-probs down to ~-25 (1.9e-6 each).
        torch.testing.assert_close(a[:, :n], torch.log_softmax(b[:, :n], dim=-1), atol=5e-5, rtol=0)
        assert torch.isneginf(a[:, n:]).all()


# --------------------------------------------------------------------------------------------
# State across calls, padding, vocabularies


def test_reusable_across_calls_batches_and_settings(models, inputs):
    primary, member, tokenizer, _ = models
    ensemble = LogOddsEnsemble(member, [0.6, 0.4], tokenizer=tokenizer)
    single = tokenizer(["Exceptions"], return_tensors="pt")
    runs = [(inputs, SETTINGS["greedy"]), (single, SETTINGS["beam4"]), (inputs, SETTINGS["return2"]),
            (inputs, SETTINGS["greedy"]), (single, SETTINGS["greedy"])]
    for batch, settings in runs:
        shared = generate(primary, batch, [ensemble], **settings)
        fresh = generate(primary, batch, [LogOddsEnsemble(member, [0.6, 0.4], tokenizer=tokenizer)], **settings)
        assert_same(shared, fresh, atol=1e-6)
    assert ensemble.counts["prefill"] == len(runs)


def test_a_continued_generation_reuses_the_caches(models, inputs):
    """Feeding a generation's output straight back continues it: the caches already hold it."""
    primary, member, tokenizer, _ = models
    ensemble = LogOddsEnsemble(member, [0.6, 0.4], tokenizer=tokenizer)
    first = generate(primary, inputs, [ensemble], max_new_tokens=6)
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, 6, dtype=torch.long)], dim=1)
    second_inputs = {"input_ids": first.sequences, "attention_mask": mask}
    second = generate(primary, second_inputs, [ensemble], max_new_tokens=6)
    fresh = generate(primary, second_inputs, [LogOddsEnsemble(member, [0.6, 0.4], tokenizer=tokenizer)], max_new_tokens=6)
    # Continued caches against a fresh prefill: both models' logits by two code paths, ~sqrt(k) eps |z|
    # ~ 1e-5 apart (|z| <= ~10, k <= 256), log-probs up to twice that.
    assert_same(second, fresh, atol=5e-5)


def test_explicit_attention_mask_for_prompts_that_begin_with_the_pad_token(models):
    """GPT-2 style: <|endoftext|> is BOS, EOS and pad at once; inferring padding would drop the BOS."""
    primary, member, tokenizer, _ = models
    bos = tokenizer.bos_token
    batch = tokenizer([bos + "The if statement", bos + "x"], return_tensors="pt", padding=True)
    weights = (0.6, 0.7)
    n = len(tokenizer)
    reference = Reference([primary, member], lambda z: reference_combine(z, weights, "logprob", (1, 1), n), n)
    ensemble = LogOddsEnsemble(member, weights, tokenizer=tokenizer)
    for _ in range(2):  # the mask applies to one call: give it again with the next one
        ours = generate(primary, batch, [ensemble.set_attention_mask(batch["attention_mask"])], num_beams=2)
        assert_same(ours, reference_generate(reference, batch, num_beams=2))
    with pytest.raises(ValueError, match="has 2 columns but the prompt"):
        generate(primary, batch, [ensemble.set_attention_mask(torch.ones(2, 2, dtype=torch.long))])


def test_members_with_wider_lm_heads_are_aligned(models, inputs):
    """A member whose LM head is padded to another width gives the same ensemble (extra columns masked)."""
    primary, member, tokenizer, _ = models
    wide = copy.deepcopy(member)
    wide.resize_token_embeddings(2112, mean_resizing=False)
    assert wide.get_output_embeddings().weight.shape[0] == 2112 != primary.config.vocab_size
    narrow_out = generate(primary, inputs, [LogOddsEnsemble(member, [0.5, 0.5], tokenizer=tokenizer)])
    wide_out = generate(primary, inputs, [LogOddsEnsemble(wide, [0.5, 0.5], tokenizer=tokenizer)])
    # The shared columns are the same dot products, but BLAS may block a matmul of another width
    # differently: a few ulps of logits and log-probs (|x| <= ~25: 1.9e-6 each), not one ulp.
    assert_same(wide_out, narrow_out, atol=1e-5)
    n = len(tokenizer)
    assert all(torch.isneginf(s[:, n:]).all() for s in wide_out.scores)


def test_masked_tokens_stay_masked(models, inputs):
    primary, member, tokenizer, _ = models
    banned = [tokenizer.encode(" the")[0], tokenizer.encode(" is")[0], tokenizer.eos_token_id]
    for processor in (LogOddsEnsemble(member, [1.0, -0.5], "logodds", tokenizer=tokenizer),
                      ContrastiveDecoding(member, alpha=1.0, tokenizer=tokenizer)):
        out = generate(primary, inputs, Chain(TokenMask(deny=banned), processor), do_sample=True, max_new_tokens=20)
        for scores in out.scores:
            assert torch.isneginf(scores[:, banned]).all() and not torch.isnan(scores).any()
        generated = out.sequences[:, inputs["input_ids"].shape[1]:]
        assert not torch.isin(generated, torch.tensor(banned)).any()


def test_half_precision_scores(models, inputs):
    primary, member, tokenizer, _ = models
    ensemble = LogOddsEnsemble(member, [0.5, 0.5], "logodds", tokenizer=tokenizer)
    with torch.no_grad():
        logits = primary(**inputs).logits[:, -1]
    for dtype in (torch.float16, torch.bfloat16):
        ensemble.reset()
        out = ensemble(inputs["input_ids"], logits.to(dtype))
        assert out.dtype == dtype and not torch.isnan(out).any()
        ensemble.reset()
        torch.testing.assert_close(out.float(), ensemble(inputs["input_ids"], logits).float(), atol=0.05, rtol=0.02)


def test_assisted_generation_is_refused(models):
    primary, member, tokenizer, _ = models
    single = tokenizer(["The if statement"], return_tensors="pt")
    ensemble = LogOddsEnsemble(member, [0.5, 0.5], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="ensemble processors do not support assisted generation"):
        generate(primary, single, [ensemble], assistant_model=member)
    with pytest.raises(ValueError, match="ensemble processors do not support assisted generation"):
        generate(primary, single, [ensemble], prompt_lookup_num_tokens=3)
    generate(primary, single, [ensemble])  # and it still works normally afterwards


def test_a_tokenizer_with_other_ids_is_aligned_on_text(models, inputs):
    """One added token is enough for ids to mean different things: such a member is read on the
    text (test_ensemble_tokenizers.py), not combined id by id."""
    primary, member, tokenizer, _ = models
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<|new token|>"])
    for processor in (LogOddsEnsemble(member, [0.5, 0.5], tokenizer=[tokenizer, other]),
                      ContrastiveDecoding(member, tokenizer=[tokenizer, other])):
        generate(primary, inputs, [processor], max_new_tokens=3)
        assert processor.counts["fed"] > 0  # the member's own tokens of the text were run


class WideVocabTokenizer:
    """GPT-2's vocabulary size (50,257 ids, no real strings needed): what the processors check."""

    pad_token_id = 0

    def __init__(self, n_tokens: int = 50257):
        self.vocab = {f"t{i}": i for i in range(n_tokens)}
        self.added_tokens_decoder = {}

    def get_vocab(self):
        return self.vocab

    def __len__(self):
        return len(self.vocab)


def random_gpt2(width: int, seed: int) -> GPT2LMHeadModel:
    from transformers import GPT2Config

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=width, n_layer=1, n_head=2, n_embd=16, n_positions=64,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # larger logits than GPT-2's initialization: peaked, varied distributions
        model.lm_head.weight.mul_(60.0)
    return model


@pytest.mark.parametrize("primary_width, member_width", [(50257, 50304), (50304, 50257)])
@pytest.mark.parametrize("combine", ["logprob", "logodds"])
def test_gpt2_sized_heads_of_different_widths_are_aligned(primary_width, member_width, combine):
    """Real GPT-2 sizes: 50,257 tokens, LM heads of 50,257 and 50,304 columns, either one the primary.
    Exact against the reference over the tokenizer's range; the other columns masked; beams and
    a left-padded batch."""
    primary, member = random_gpt2(primary_width, seed=0), random_gpt2(member_width, seed=1)
    tokenizer = WideVocabTokenizer()
    n = len(tokenizer)
    ids = torch.tensor([[0, 0, 0, 500, 7, 42_000], [9, 31_000, 12, 50_000, 3, 8]])  # left-padded with 0
    batch = {"input_ids": ids, "attention_mask": (torch.arange(6) >= torch.tensor([[3], [0]])).long()}
    weights = (0.7, 0.6)
    ensemble = LogOddsEnsemble(member, weights, combine, tokenizer=tokenizer)
    reference = Reference([primary, member], lambda z: reference_combine(z, weights, combine, (1, 1), n), n)
    for settings in (SETTINGS["greedy"], dict(do_sample=False, num_beams=3)):
        ours = generate(primary, batch, [ensemble], max_new_tokens=5, pad_token_id=0, **settings)
        assert_same(ours, reference_generate(reference, batch, max_new_tokens=5, pad_token_id=0, **settings))
        assert all(s.shape[-1] == primary_width and torch.isneginf(s[:, n:]).all() for s in ours.scores)
        alone = generate(primary, batch, [], max_new_tokens=5, pad_token_id=0, **settings)
        assert not torch.equal(alone.sequences, ours.sequences)  # the member mattered


def test_inputs_embeds_without_token_ids_is_refused(models):
    """generate(inputs_embeds=...) hands processors only the new tokens: the members cannot see the prompt."""
    primary, member, tokenizer, _ = models
    single = tokenizer(["The if statement"], return_tensors="pt")
    embeds = primary.get_input_embeddings()(single["input_ids"])
    ensemble = LogOddsEnsemble(member, [0.5, 0.5], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="inputs_embeds"), torch.no_grad():
        primary.generate(inputs_embeds=embeds, attention_mask=single["attention_mask"], logits_processor=[ensemble],
                         max_new_tokens=3, do_sample=False)
