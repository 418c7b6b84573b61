"""PhraseBan inside real generate() calls on the tiny GPT-2: greedy, sampling, beams, several returns.

The banned phrases are taken from the model's own unconstrained outputs (same prompts, same
seeds), so every check below would fail without the processor.
"""

import re

import pytest
import torch

from logit_processors import PhraseBan
from logit_processors.processors.phrase_ban import phrase_variants

pytestmark = pytest.mark.integration

PROMPTS = ["The object is", "A class definition", "In Python the value of"]

# name -> (seed, generate() arguments). Sampling: 3 prompts x 80 = 240 new tokens.
MODES = {
    "greedy": (0, dict(do_sample=False, max_new_tokens=40)),
    "sampling": (1, dict(do_sample=True, max_new_tokens=80)),
    "beam": (2, dict(do_sample=False, num_beams=4, max_new_tokens=30)),
    "sampling_3_returns": (3, dict(do_sample=True, num_return_sequences=3, max_new_tokens=30)),
    "beam_3_returns": (4, dict(do_sample=False, num_beams=4, num_return_sequences=3, max_new_tokens=30)),
}

WORDS = re.compile(r" ?[A-Za-z]+( [A-Za-z]+)*")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs faster on one thread; on a busy 2-core machine two OpenMP threads
    were measured 10x slower (52 s instead of 4 s for this file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generate(model, tokenizer, mode, processors=()):
    """(full output ids, prompt length) for one decoding mode, deterministic for its seed."""
    seed, kwargs = MODES[mode]
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **inputs, **kwargs, pad_token_id=tokenizer.pad_token_id, logits_processor=list(processors)
        )
    return out, inputs["input_ids"].shape[1]


def banned_occurrences(out: torch.Tensor, prompt_length: int, sequences) -> list[tuple[int, tuple[int, ...]]]:
    """(row, sequence) for every banned token sequence that ends inside the generated part."""
    found = []
    for row, ids in enumerate(out.tolist()):
        for seq in sequences:
            n = len(seq)
            for end in range(max(prompt_length, n - 1), len(ids)):
                if tuple(ids[end - n + 1 : end + 1]) == seq:
                    found.append((row, seq))
                    break
    return found


def phrases_in_text(text: str, phrases) -> list[str]:
    """The banned spellings (every variant) that occur in ``text`` as whole words."""
    spellings = {form.strip() for phrase in phrases for form in phrase_variants(phrase, case_variants=True)}
    return sorted(s for s in spellings if re.search(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", text))


def candidate_phrases(tokenizer, generated_rows) -> list[str]:
    """Word phrases of 2-3 tokens, in order of appearance, whose text tokenizes back to the
    same ids (so banning the phrase bans exactly what the model produced)."""
    found = []
    for row in generated_rows:
        for i in range(len(row)):
            for n in (2, 3):
                ngram = row[i : i + n]
                if len(ngram) < n:
                    continue
                text = tokenizer.decode(ngram)
                if not WORDS.fullmatch(text) or tokenizer.encode(text, add_special_tokens=False) != ngram:
                    continue
                if text.strip() not in found:
                    found.append(text.strip())
    return found


@pytest.fixture(scope="module")
def unconstrained(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    return {mode: generate(model, tokenizer, mode) for mode in MODES}


@pytest.fixture(scope="module")
def banned_phrases(tiny_gpt2, unconstrained):
    """20+ phrases, taken round-robin from every mode's unconstrained output."""
    _, tokenizer = tiny_gpt2
    per_mode = []
    for out, prompt_length in unconstrained.values():
        per_mode.append(candidate_phrases(tokenizer, out[:, prompt_length:].tolist()))
    assert all(per_mode), "every mode must yield at least one phrase to ban"
    chosen: list[str] = []
    while len(chosen) < 24 and any(per_mode):
        for candidates in per_mode:
            while candidates and candidates[0] in chosen:
                candidates.pop(0)
            if candidates:
                chosen.append(candidates.pop(0))
    assert len(chosen) >= 20, f"only {len(chosen)} candidate phrases: {chosen}"
    return chosen


@pytest.mark.parametrize("mode", list(MODES))
def test_generate_never_produces_a_banned_phrase(tiny_gpt2, unconstrained, banned_phrases, mode):
    model, tokenizer = tiny_gpt2
    ban = PhraseBan(banned_phrases, tokenizer, case_variants=True)

    # Without the processor the model does produce banned sequences: the checks below can fail.
    free, prompt_length = unconstrained[mode]
    assert banned_occurrences(free, prompt_length, ban.sequences)

    out, prompt_length = generate(model, tokenizer, mode, [ban])
    assert out.shape[0] == free.shape[0]
    assert banned_occurrences(out, prompt_length, ban.sequences) == []
    for text in tokenizer.batch_decode(out[:, prompt_length:], skip_special_tokens=True):
        assert phrases_in_text(text, banned_phrases) == [], text


def test_one_processor_serves_every_mode_in_turn(tiny_gpt2, banned_phrases):
    # One instance reused across generate() calls with different batch shapes (3, 12, 9 rows):
    # state comes from input_ids, so nothing leaks from one call into the next.
    model, tokenizer = tiny_gpt2
    ban = PhraseBan(banned_phrases, tokenizer)
    for mode in ["greedy", "beam", "sampling_3_returns", "greedy"]:
        out, prompt_length = generate(model, tokenizer, mode, [ban])
        assert banned_occurrences(out, prompt_length, ban.sequences) == []
