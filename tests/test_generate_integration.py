"""Behaviour through real ``model.generate()`` calls on the tiny GPT-2 (tests/tiny_gpt2.py).

Every assertion is chosen so that it can fail: denied ids are ids the model *does* produce
without the mask, allow-lists exclude tokens it would otherwise pick, and score relations are
checked against ``output_logits`` (the raw logits each step's processors received).

Notes on Hugging Face ``generate()`` that these tests rely on (transformers >= 4.46):

* ``output_scores`` are the scores after *all* processors, HF's own warpers included;
  ``output_logits`` are the raw logits the processors started from.
* User processors run before HF's sampling warpers (temperature, top-k, top-p, min-p): with
  ``do_sample=True`` we pass ``top_k=0, top_p=1.0, temperature=1.0`` so none of them is active.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import LogitsProcessorList, pipeline

from logit_processors import Chain, EntropyTemperature, Processor, Temperature, TokenMask, VocabFilter
from logit_processors.processors import truncation

pytestmark = pytest.mark.integration

PROMPTS = ["The import statement", "A function definition is a compound statement that", "x"]
# HF's own sampling warpers switched off, so only our processors shape the distribution.
SAMPLING = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
GREEDY = {"do_sample": False}


def generate(model, tokenizer, prompts, *, seed=None, **kwargs):
    """``(new_tokens [B', N], output)`` for a left-padded batch; sampling seeded when ``seed`` is set."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**encoded, return_dict_in_generate=True, **kwargs)
    return out.sequences[:, encoded["input_ids"].shape[1] :], out


def most_frequent(tokens: torch.Tensor, n: int, exclude: set[int]) -> list[int]:
    counts = Counter(t for t in tokens.flatten().tolist() if t not in exclude)
    return [t for t, _ in counts.most_common(n)]


def steps(scores: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``output_scores``/``output_logits`` as one tensor ``[steps, rows, vocab]``."""
    return torch.stack(scores)


# ------------------------------------------------------------------------------------------
# Greedy


def test_tiny_model_is_not_degenerate(tiny_gpt2):
    """Greedy output varies, so a processor's effect on it is observable."""
    model, tokenizer = tiny_gpt2
    new, _ = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=20, **GREEDY)
    assert len(set(new[0].tolist())) >= 3


def test_temperature_one_leaves_greedy_output_and_scores_unchanged(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    kwargs = dict(max_new_tokens=15, output_scores=True, **GREEDY)
    base_new, base = generate(model, tokenizer, PROMPTS, **kwargs)
    new, out = generate(model, tokenizer, PROMPTS, logits_processor=Chain(Temperature(1.0)), **kwargs)
    assert torch.equal(new, base_new)
    assert torch.equal(steps(out.scores), steps(base.scores))


def test_temperature_keeps_the_argmax_and_divides_the_scores(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    kwargs = dict(max_new_tokens=15, output_scores=True, **GREEDY)
    base_new, base = generate(model, tokenizer, PROMPTS, **kwargs)
    new, out = generate(model, tokenizer, PROMPTS, logits_processor=Chain(Temperature(0.5)), **kwargs)
    assert torch.equal(new, base_new)  # dividing by T > 0 keeps the order of the tokens
    assert torch.equal(steps(out.scores), steps(base.scores) * 2)  # x / 0.5 == 2x exactly in fp32


def test_denying_the_greedy_token_changes_the_continuation(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, _ = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=15, **GREEDY)
    denied = base_new[0, 0].item()
    new, _ = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=15, logits_processor=Chain(TokenMask(deny=[denied])), **GREEDY)
    assert new[0, 0].item() != denied
    assert denied not in new.tolist()[0]


def test_chain_and_pipe_are_accepted_directly_as_logits_processor(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, _ = generate(model, tokenizer, PROMPTS, max_new_tokens=15, **GREEDY)
    denied = most_frequent(base_new, 2, exclude={tokenizer.eos_token_id})
    kwargs = dict(max_new_tokens=15, output_scores=True, **GREEDY)

    piped = Temperature(0.7) | TokenMask(deny=denied)
    assert isinstance(piped, Chain)
    results = [
        generate(model, tokenizer, PROMPTS, logits_processor=processors, **kwargs)
        for processors in (
            piped,
            Chain(Temperature(0.7), TokenMask(deny=denied)),
            LogitsProcessorList([Temperature(0.7), TokenMask(deny=denied)]),
        )
    ]
    (new, out), *others = results
    for other_new, other_out in others:
        assert torch.equal(other_new, new)
        assert torch.equal(steps(other_out.scores), steps(out.scores))
    assert not set(denied) & set(new.flatten().tolist())
    assert not torch.equal(new, base_new)


def test_entropy_temperature_follows_its_formula_inside_generate(tiny_gpt2):
    """scores = logits / T, T = min_t + (max_t - min_t) * (H / log n) ** exponent, per row and step."""
    model, tokenizer = tiny_gpt2
    proc = EntropyTemperature(0.5, 1.5, exponent=2.0)
    _, out = generate(
        model, tokenizer, PROMPTS, max_new_tokens=10, logits_processor=Chain(proc),
        output_scores=True, output_logits=True, **GREEDY,
    )
    logits, scores = steps(out.logits).double(), steps(out.scores).double()
    log_p = torch.log_softmax(logits, dim=-1)
    h = -(log_p.exp() * log_p).sum(-1) / torch.log(torch.tensor(float(logits.shape[-1])))
    t = 0.5 + (1.5 - 0.5) * h**2.0
    torch.testing.assert_close(scores, logits / t[..., None], rtol=1e-5, atol=1e-5)
    assert t.min() < t.max()  # rows and steps really got different temperatures


# ------------------------------------------------------------------------------------------
# Sampling: 4 sequences x 60 tokens = 240 sampled tokens per call (EOS suppressed until then)

SAMPLE_240 = dict(num_return_sequences=4, max_new_tokens=60, min_new_tokens=60, **SAMPLING)


def test_denied_ids_are_never_sampled(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, _ = generate(model, tokenizer, PROMPTS[:1], seed=0, **SAMPLE_240)
    assert base_new.numel() >= 200
    denied = most_frequent(base_new, 3, exclude={tokenizer.eos_token_id})
    for seed in (0, 1):
        new, _ = generate(model, tokenizer, PROMPTS[:1], seed=seed, logits_processor=Chain(TokenMask(deny=denied)), **SAMPLE_240)
        assert new.numel() >= 200
        assert not set(denied) & set(new.flatten().tolist())


def test_allow_list_only_produces_allowed_ids(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, _ = generate(model, tokenizer, PROMPTS[:1], seed=0, **SAMPLE_240)
    allowed = set(tokenizer.encode(" the statement is a function of the name and value"))
    assert set(base_new.flatten().tolist()) - allowed  # unmasked, the model goes elsewhere
    new, _ = generate(model, tokenizer, PROMPTS[:1], seed=0, logits_processor=Chain(TokenMask(allow=allowed)), **SAMPLE_240)
    assert set(new.flatten().tolist()) <= allowed
    assert len(set(new.flatten().tolist())) > 1


def test_vocab_filter_only_produces_matching_tokens(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    words_only = VocabFilter(tokenizer, lambda s: s.strip().isalpha())
    base_new, _ = generate(model, tokenizer, PROMPTS[:1], seed=0, **SAMPLE_240)
    assert any(not tokenizer.decode([t]).strip().isalpha() for t in base_new.flatten().tolist())
    new, _ = generate(model, tokenizer, PROMPTS[:1], seed=0, logits_processor=Chain(words_only), **SAMPLE_240)
    assert all(tokenizer.decode([t]).strip().isalpha() for t in new.flatten().tolist())
    assert new.max().item() < len(tokenizer)  # the padded LM-head columns are not tokens


def test_padded_lm_head_columns_are_masked_by_allow_masks(tiny_gpt2):
    """A [V_tokenizer] allow mask applies to the wider LM head: the extra columns are removed."""
    model, tokenizer = tiny_gpt2
    assert model.config.vocab_size > len(tokenizer)
    everything = torch.ones(len(tokenizer), dtype=torch.bool)
    _, out = generate(
        model, tokenizer, PROMPTS, max_new_tokens=5, logits_processor=Chain(TokenMask(allow=everything)),
        output_scores=True, output_logits=True, **SAMPLING,
    )
    scores, logits = steps(out.scores), steps(out.logits)
    assert torch.isneginf(scores[..., len(tokenizer) :]).all()
    assert torch.equal(scores[..., : len(tokenizer)], logits[..., : len(tokenizer)])


def test_seeded_sampling_is_reproducible_and_processors_are_reusable(tiny_gpt2):
    """The same processor objects, reused across generate() calls of different batch sizes."""
    model, tokenizer = tiny_gpt2
    chain = Temperature(0.8) | TokenMask(deny=[5, 6]) | EntropyTemperature(0.7, 1.3) | VocabFilter(tokenizer, str.isascii)

    def run(processors, prompts, seed):
        new, _ = generate(model, tokenizer, prompts, seed=seed, max_new_tokens=20, logits_processor=processors, **SAMPLING)
        return new

    first = run(chain, PROMPTS[:1], seed=3)
    run(chain, PROMPTS, seed=4)  # a different batch in between
    run(chain, PROMPTS[1:], seed=5)
    again = run(chain, PROMPTS[:1], seed=3)
    fresh = run(
        Temperature(0.8) | TokenMask(deny=[5, 6]) | EntropyTemperature(0.7, 1.3) | VocabFilter(tokenizer, str.isascii),
        PROMPTS[:1],
        seed=3,
    )
    assert torch.equal(again, first)
    assert torch.equal(fresh, first)
    assert not torch.equal(run(chain, PROMPTS[:1], seed=4), first)  # the seed matters: this is sampling


def test_per_row_temperature_changes_only_its_row(tiny_gpt2):
    """Two identical prompts, T = [1.0, 0.5]: row 0 keeps the baseline scores, row 1 doubles them."""
    model, tokenizer = tiny_gpt2
    prompts = [PROMPTS[0]] * 2
    kwargs = dict(max_new_tokens=15, output_scores=True, **GREEDY)
    base_new, base = generate(model, tokenizer, prompts, **kwargs)
    new, out = generate(model, tokenizer, prompts, logits_processor=Chain(Temperature(torch.tensor([1.0, 0.5]))), **kwargs)
    assert torch.equal(new, base_new)
    scores, base_scores = steps(out.scores), steps(base.scores)
    assert torch.equal(scores[:, 0], base_scores[:, 0])
    assert torch.equal(scores[:, 1], base_scores[:, 1] * 2)

    # Sampling: the rows' samples diverge, but each step's scores still relate to its logits.
    _, out = generate(
        model, tokenizer, prompts, seed=0, max_new_tokens=15, logits_processor=Chain(Temperature(torch.tensor([1.0, 0.5]))),
        output_scores=True, output_logits=True, **SAMPLING,
    )
    scores, logits = steps(out.scores), steps(out.logits)
    assert torch.equal(scores[:, 0], logits[:, 0])
    assert torch.equal(scores[:, 1], logits[:, 1] * 2)


def test_per_prompt_temperature_is_expanded_over_num_return_sequences(tiny_gpt2):
    """2 prompts x 3 return sequences = 6 rows; T = [1.0, 0.5] covers rows 0-2 and 3-5."""
    model, tokenizer = tiny_gpt2
    _, out = generate(
        model, tokenizer, PROMPTS[:2], seed=0, num_return_sequences=3, max_new_tokens=10,
        logits_processor=Chain(Temperature(torch.tensor([1.0, 0.5]))), output_scores=True, output_logits=True, **SAMPLING,
    )
    scores, logits = steps(out.scores), steps(out.logits)
    assert scores.shape[1] == 6
    assert torch.equal(scores[:, :3], logits[:, :3])
    assert torch.equal(scores[:, 3:], logits[:, 3:] * 2)


def test_hf_applies_its_sampling_warpers_after_user_processors(tiny_gpt2):
    """With do_sample=True, generation_config's temperature / top_k run AFTER logits_processor.

    So a processor sees the raw logits, and setting both temperatures applies both.
    """
    model, tokenizer = tiny_gpt2
    ids = torch.zeros(1, 1, dtype=torch.long)

    # EntropyTemperature does not commute with scaling, so the order is visible.
    proc = EntropyTemperature(0.5, 1.5)
    _, out = generate(
        model, tokenizer, PROMPTS[:1], seed=0, max_new_tokens=8, logits_processor=Chain(proc),
        output_scores=True, output_logits=True, do_sample=True, top_k=0, top_p=1.0, temperature=0.5,
    )
    for logits, scores in zip(out.logits, out.scores):
        ours_then_hf = proc(ids, logits) / 0.5
        hf_then_ours = proc(ids, logits / 0.5)
        torch.testing.assert_close(scores, ours_then_hf)
        assert not torch.allclose(scores, hf_then_ours)

    # Temperature(0.5) plus generation temperature 0.5: the two multiply (logits / 0.25).
    _, out = generate(
        model, tokenizer, PROMPTS[:1], seed=0, max_new_tokens=8, logits_processor=Chain(Temperature(0.5)),
        output_scores=True, output_logits=True, do_sample=True, top_k=0, top_p=1.0, temperature=0.5,
    )
    torch.testing.assert_close(steps(out.scores), steps(out.logits) / 0.25)

    # top_k=1 after our deny of the raw argmax samples the runner-up; were top_k applied first,
    # our mask would remove its only survivor and nothing would be left to sample.
    class DenyArgmax(Processor):
        def process(self, input_ids, scores):
            return scores.scatter(1, scores.argmax(-1, keepdim=True), float("-inf"))

    new, out = generate(
        model, tokenizer, PROMPTS[:1], seed=0, max_new_tokens=8, logits_processor=Chain(DenyArgmax()),
        output_logits=True, do_sample=True, top_k=1, top_p=1.0, temperature=1.0,
    )
    runner_up = steps(out.logits)[:, 0].topk(2).indices[:, 1]
    assert torch.equal(new[0, : len(runner_up)], runner_up)


# ------------------------------------------------------------------------------------------
# Beam search


BEAMS = dict(num_beams=4, num_return_sequences=4, max_new_tokens=12, do_sample=False, early_stopping=True)


def test_beam_search_temperature_one_is_identity(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, base = generate(model, tokenizer, PROMPTS[:2], output_scores=True, **BEAMS)
    new, out = generate(model, tokenizer, PROMPTS[:2], logits_processor=Chain(Temperature(1.0)), output_scores=True, **BEAMS)
    assert torch.equal(new, base_new)
    assert torch.equal(out.sequences_scores, base.sequences_scores)


def test_beam_search_never_returns_denied_ids(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    base_new, _ = generate(model, tokenizer, PROMPTS[:2], **BEAMS)
    denied = most_frequent(base_new, 3, exclude={tokenizer.eos_token_id})
    new, _ = generate(model, tokenizer, PROMPTS[:2], logits_processor=Chain(TokenMask(deny=denied)), **BEAMS)
    assert new.shape[0] == 8
    assert not set(denied) & set(new.flatten().tolist())


def test_beam_search_expands_a_per_prompt_mask_over_its_beams(tiny_gpt2):
    """A [2, V] allow mask for 2 prompts covers each prompt's 4 beams (8 rows)."""
    model, tokenizer = tiny_gpt2
    words = [set(tokenizer.encode(" the name of a function")), set(tokenizer.encode(" value is an object"))]
    allow = torch.zeros(2, len(tokenizer), dtype=torch.bool)
    for row, ids in enumerate(words):
        allow[row, sorted(ids)] = True
    new, _ = generate(model, tokenizer, PROMPTS[:2], logits_processor=Chain(TokenMask(allow=allow)), **BEAMS)
    for row in range(8):
        assert set(new[row].tolist()) <= words[row // 4], f"beam row {row}"


# ------------------------------------------------------------------------------------------
# Left-padded batches


def test_left_padded_batch_matches_each_prompt_alone(tiny_gpt2):
    """Padding changes the logits by float noise (~1e-6) only, so greedy continuations agree.

    Comparison stops at a near tie (top-2 margin < 1e-3 in the prompt's own run), where that
    noise could legitimately flip the argmax.
    """
    model, tokenizer = tiny_gpt2
    make_chain = lambda: Temperature(0.7) | TokenMask(deny=[5, 6]) | EntropyTemperature(0.8, 1.2)  # noqa: E731
    batch_new, batch_out = generate(model, tokenizer, PROMPTS, max_new_tokens=20, logits_processor=make_chain(), output_scores=True, **GREEDY)
    lengths = [len(tokenizer.encode(p)) for p in PROMPTS]
    assert len(set(lengths)) == len(PROMPTS)  # really padded: every prompt a different length

    compared = 0
    for row, prompt in enumerate(PROMPTS):
        alone_new, alone_out = generate(model, tokenizer, [prompt], max_new_tokens=20, logits_processor=make_chain(), output_scores=True, **GREEDY)
        top2 = steps(alone_out.scores)[:, 0].topk(2).values
        near_tie = ((top2[:, 0] - top2[:, 1]) < 1e-3).nonzero()
        n = int(near_tie[0]) + 1 if len(near_tie) else alone_new.shape[1]
        assert torch.equal(batch_new[row, :n], alone_new[0, :n]), f"row {row}: {prompt!r}"
        torch.testing.assert_close(steps(batch_out.scores)[:n, row], steps(alone_out.scores)[:n, 0], rtol=1e-4, atol=1e-4)
        compared += n
    assert compared >= 30


# ------------------------------------------------------------------------------------------
# Fully masked rows


def test_fully_masked_row_raises_by_default(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    with pytest.raises(ValueError, match="masked every token"):
        generate(model, tokenizer, PROMPTS[:1], max_new_tokens=5, logits_processor=Chain(TokenMask(allow=[])), **GREEDY)


def test_keep_eos_ends_a_fully_masked_row_with_eos(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    eos = tokenizer.eos_token_id
    allow = torch.zeros(2, len(tokenizer), dtype=torch.bool)
    allow[0] = True  # row 0: every token; row 1: none
    allow[0, eos] = False  # row 0 must not stop on its own
    proc = TokenMask(allow=allow, on_empty="keep_eos", eos_token_id=eos)
    new, _ = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=10, logits_processor=Chain(proc), **GREEDY)
    assert new[1, 0].item() == eos
    assert (new[1] == tokenizer.pad_token_id).all()  # finished: padded from then on
    assert new.shape[1] == 10 and eos not in new[0].tolist()

    alone, _ = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=10, logits_processor=Chain(TokenMask(deny=[eos])), **GREEDY)
    assert torch.equal(new[0], alone[0])


# ------------------------------------------------------------------------------------------
# pipeline()


def test_pipeline_accepts_a_chain(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    prompt = PROMPTS[0]
    base_new, _ = generate(model, tokenizer, [prompt], max_new_tokens=12, **GREEDY)
    chain = Temperature(0.7) | TokenMask(deny=[base_new[0, 0].item()])
    direct, _ = generate(model, tokenizer, [prompt], max_new_tokens=12, logits_processor=chain, **GREEDY)

    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, logits_processor=chain)
    text = generator(prompt, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert text == tokenizer.decode(direct[0], skip_special_tokens=True)
    assert text != tokenizer.decode(base_new[0], skip_special_tokens=True)

    plain = pipeline("text-generation", model=model, tokenizer=tokenizer)  # per-call argument too
    again = plain(prompt, max_new_tokens=12, do_sample=False, return_full_text=False, logits_processor=chain)
    assert again[0]["generated_text"] == text


# ------------------------------------------------------------------------------------------
# Truncation processors (guarded: skipped until logit_processors.truncation exists)


@pytest.mark.parametrize(
    ("name", "arg", "hf_kwargs"),
    [("TopK", 5, {"top_k": 5}), ("TopP", 0.8, {"top_p": 0.8, "top_k": 0}), ("MinP", 0.1, {"min_p": 0.1, "top_k": 0})],
)
def test_truncation_samples_like_the_hf_warper(tiny_gpt2, name, arg, hf_kwargs):
    """Our TopK/TopP/MinP keep the same tokens as HF's warpers: same seed, same samples."""
    processor = getattr(truncation, name)(arg)
    model, tokenizer = tiny_gpt2
    ours, out = generate(
        model, tokenizer, PROMPTS, seed=0, max_new_tokens=30, logits_processor=Chain(processor),
        output_scores=True, **SAMPLING,
    )
    hf_sampling = {**SAMPLING, **hf_kwargs}
    theirs, _ = generate(model, tokenizer, PROMPTS, seed=0, max_new_tokens=30, **hf_sampling)
    assert torch.equal(ours, theirs)
    kept = torch.isfinite(steps(out.scores)).sum(-1)
    assert kept.min() >= 1 and kept.max() < model.config.vocab_size // 2  # really truncated
    if name == "TopK":
        assert (kept >= 5).all() and (kept == 5).any()  # ties with the 5th may keep more
