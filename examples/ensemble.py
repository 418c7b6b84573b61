"""Ensembling two real checkpoints inside generate(), and contrastive decoding, against greedy.

    python examples/ensemble.py            # 50 prompts, 64 new tokens each (~5 minutes, one CPU thread)
    LOGIT_PROCESSORS_EXAMPLE_QUICK=1 python examples/ensemble.py    # 3 prompts, 8 tokens (the test suite)

The primary is SmolLM2-135M-Instruct (embedded, offline). The second checkpoint is a small GPT-2
trained on Python's own documentation with SmolLM2's tokenizer (built once by
examples/pydoc_gpt2.py, ~40 s of CPU; the quick run uses a 4x shorter-trained build, ~10 s). Both
map tokens to the same ids; their LM heads have 49,152 and 49,216 columns, and the processors cut
both to the tokenizer's range.

Four decoders continue the same 50 prompts (plain text, greedy, left-padded batches):

* greedy: SmolLM2 alone;
* product of experts: ``LogOddsEnsemble(weights=[1, 0.5], combine="logprob")``, SmolLM2's
  log-probabilities plus half the pydoc model's;
* log-odds: the same weights on per-token log-odds;
* contrastive decoding (Li et al., 2023): SmolLM2 as the expert, the pydoc model as the
  amateur, ``log p_expert - 1.0 * log p_amateur`` over the tokens with at least 0.1 times the
  expert's top probability.

For each it prints the repeated-4-gram rate (of the 4-grams in a continuation, the share that
already occurred earlier in it: greedy decoding of small models loops) and distinct-n (unique
n-grams over all continuations / all n-grams, Li et al., 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models"), counted on token ids up to EOS.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging

from logit_processors import ContrastiveDecoding, LogOddsEnsemble
from logit_processors.models import load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pydoc_gpt2 import load_pydoc_gpt2  # noqa: E402  (the builder script next to this one)

QUICK = os.environ.get("LOGIT_PROCESSORS_EXAMPLE_QUICK", "") not in ("", "0")
PROMPTS = [
    "The best way to learn a new programming language is",
    "In Python, a dictionary is",
    "The history of the printing press begins",
    "When you open a file in Python, you should",
    "My favourite thing about autumn is",
    "A good unit test should",
    "The difference between a list and a tuple is",
    "Exceptions are used to",
    "The city was quiet that night, and",
    "To make a cup of tea, first",
    "The main advantage of version control is",
    "A generator function in Python",
    "Scientists have discovered that",
    "The old lighthouse keeper",
    "The with statement is useful because",
    "In the beginning of the twentieth century,",
    "Recursion is a technique in which",
    "The most important rule of cooking is",
    "A class in object-oriented programming",
    "Once upon a time, in a small village,",
    "The import statement",
    "Climate change affects",
    "A lambda expression",
    "The train left the station at",
    "Writing clear documentation matters because",
    "The moon is",
    "Decorators in Python allow you to",
    "If you want to stay healthy, you should",
    "The global interpreter lock",
    "Music has the power to",
    "String formatting in Python can be done",
    "The ocean covers",
    "A for loop iterates over",
    "The author of the book argues that",
    "Memory management in Python",
    "On a rainy Sunday afternoon,",
    "The assert statement",
    "Good software engineers",
    "The keyword arguments of a function",
    "The village market was",
    "Modules and packages help",
    "The first step in solving any problem is",
    "A while loop runs",
    "The museum's new exhibition",
    "Regular expressions are",
    "Learning to play the piano",
    "The return statement",
    "Artificial intelligence will",
    "Slicing a sequence",
    "The mountain path was",
]
N_PROMPTS, NEW_TOKENS, BATCH = (3, 8, 3) if QUICK else (50, 64, 10)


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(tokens: list[int], n: int = 4) -> float:
    """Share of the n-grams of one continuation that already occurred earlier in it."""
    grams, seen, repeats = ngrams(tokens, n), set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def distinct(continuations: list[list[int]], n: int) -> float:
    """Unique n-grams over all continuations / all n-grams (Li et al., 2016)."""
    grams = [g for tokens in continuations for g in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def continue_prompts(model, tokenizer, prompts: list[str], processors: list) -> tuple[list[list[int]], float]:
    """Greedy continuations (token ids up to EOS) of every prompt, in left-padded batches; seconds."""
    outputs, started = [], time.perf_counter()
    for start in range(0, len(prompts), BATCH):
        inputs = tokenizer(prompts[start : start + BATCH], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**inputs, logits_processor=processors, do_sample=False, max_new_tokens=NEW_TOKENS)
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            outputs.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return outputs, time.perf_counter() - started


def main() -> None:
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # One thread: these are small batches of a small model, and on a busy 2-core machine two OpenMP
    # threads spin-waiting against other processes run ~6x slower than one (measured).
    torch.set_num_threads(1)
    smollm2, tokenizer = load("smollm2", progress=False)
    pydoc_gpt2, pydoc_tokenizer = load_pydoc_gpt2(quick=QUICK)  # QUICK: a shorter-trained build (seconds)
    tokenizers = [tokenizer, pydoc_tokenizer]  # checked: the same token-to-id mapping
    print(f"primary: SmolLM2-135M-Instruct, LM head {smollm2.get_output_embeddings().weight.shape[0]} columns")
    print(f"member:  pydoc GPT-2, LM head {pydoc_gpt2.get_output_embeddings().weight.shape[0]} columns; "
          f"shared tokenizer: {len(tokenizer)} tokens")

    decoders = {
        "greedy (SmolLM2 alone)": [],
        "product of experts [1, 0.5]": [LogOddsEnsemble(pydoc_gpt2, [1.0, 0.5], "logprob", tokenizer=tokenizers)],
        "log-odds [1, 0.5]": [LogOddsEnsemble(pydoc_gpt2, [1.0, 0.5], "logodds", tokenizer=tokenizers)],
        "contrastive (alpha 1, 0.1)": [ContrastiveDecoding(pydoc_gpt2, alpha=1.0, plausibility=0.1, tokenizer=tokenizers)],
    }
    prompts = PROMPTS[:N_PROMPTS]
    print(f"\n{len(prompts)} prompts, up to {NEW_TOKENS} new tokens each, greedy, batches of {BATCH}\n")
    print(f"{'decoder':30s} {'rep-4':>7s} {'distinct-1':>11s} {'distinct-2':>11s} {'distinct-3':>11s} "
          f"{'tokens':>7s} {'ms/token':>9s}")
    samples = {}
    for name, processors in decoders.items():
        continuations, seconds = continue_prompts(smollm2, tokenizer, prompts, processors)
        n_tokens = sum(len(c) for c in continuations)
        rep4 = sum(repeated_ngram_rate(c) for c in continuations) / len(continuations)
        print(f"{name:30s} {rep4:7.3f} {distinct(continuations, 1):11.3f} {distinct(continuations, 2):11.3f} "
              f"{distinct(continuations, 3):11.3f} {n_tokens / len(continuations):7.1f} "
              f"{1000 * seconds / max(n_tokens, 1):9.1f}", flush=True)
        samples[name] = tokenizer.decode(continuations[0], skip_special_tokens=True)
    print(f"\nPrompt: {prompts[0]!r}")
    for name, text in samples.items():
        print(f"  {name}: {text!r}")


if __name__ == "__main__":
    main()
