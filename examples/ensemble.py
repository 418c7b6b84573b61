"""Ensembling two real checkpoints with different tokenizers inside generate(), against each alone.

    python examples/ensemble.py            # 50 prompts, 64 new tokens each (~15 minutes, one CPU thread)
    LOGIT_PROCESSORS_EXAMPLE_QUICK=1 python examples/ensemble.py    # 3 prompts, 8 tokens (the test suite)

The primary is SmolLM2-135M-Instruct (49,152 tokens, byte-level BPE); the member is Gemma-3-270M
(262,144 tokens, SentencePiece-style BPE), both embedded and offline. They share no token ids:
Gemma reads the text SmolLM2 writes in its own tokens, and its probability of each SmolLM2 token
comes from that (``logit_processors.runtime.aligned_members``), with its KV cache extended by the
new text at every step.

Decoders, all greedy, on the same 50 plain-text prompts (left-padded batches of 10):

* SmolLM2 alone, and Gemma alone (its continuation re-encoded with SmolLM2's tokenizer, so that
  every row is counted on the same token ids);
* mixture: ``LogOddsEnsemble(gemma, [0.5, 0.5], "mixture")``, the two models' probabilities averaged;
* product of experts: ``LogOddsEnsemble(gemma, [1, 0.5], "logprob")``;
* log-odds: ``LogOddsEnsemble(gemma, [1, 0.5], "logodds")``.

For each it prints the repeated-4-gram rate (of the 4-grams in a continuation, the share that
already occurred earlier in it: greedy decoding of small models loops) and distinct-n (unique
n-grams over all continuations / all n-grams, Li et al., 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models"), counted on SmolLM2 token ids up to EOS, then a few
continuations side by side.
"""

from __future__ import annotations

import os
import time

import torch
from transformers.utils import logging

from logit_processors import LogOddsEnsemble
from logit_processors.models import load

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


def continue_prompts(model, tokenizer, prompts: list[str], processors: list, eos_ids: set[int]) -> tuple[list[str], float]:
    """Greedy continuations (text up to EOS) of every prompt, in left-padded batches; seconds."""
    outputs, started = [], time.perf_counter()
    for start in range(0, len(prompts), BATCH):
        inputs = tokenizer(prompts[start : start + BATCH], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**inputs, logits_processor=processors, do_sample=False, max_new_tokens=NEW_TOKENS,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            end = next((k for k, t in enumerate(row) if t in eos_ids), len(row))
            outputs.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    return outputs, time.perf_counter() - started


def main() -> None:
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # One thread: these are small batches of small models, and on a busy 2-core machine two OpenMP
    # threads spin-waiting against other processes run several times slower than one (measured).
    torch.set_num_threads(1)
    smollm2, tokenizer = load("smollm2", progress=False)
    gemma, gemma_tokenizer = load("gemma3-270m", progress=False)
    print(f"primary: SmolLM2-135M-Instruct, {len(tokenizer)} tokens; member: Gemma-3-270M, {len(gemma_tokenizer)} tokens")
    pair = [tokenizer, gemma_tokenizer]  # different tokenizers: Gemma is aligned on the text
    decoders = {
        "SmolLM2 alone": (smollm2, tokenizer, []),
        "Gemma-3-270M alone": (gemma, gemma_tokenizer, []),
        "mixture [0.5, 0.5]": (smollm2, tokenizer, [LogOddsEnsemble(gemma, [0.5, 0.5], "mixture", tokenizer=pair)]),
        "product of experts [1, 0.5]": (smollm2, tokenizer, [LogOddsEnsemble(gemma, [1.0, 0.5], "logprob", tokenizer=pair)]),
        "log-odds [1, 0.5]": (smollm2, tokenizer, [LogOddsEnsemble(gemma, [1.0, 0.5], "logodds", tokenizer=pair)]),
    }
    prompts = PROMPTS[:N_PROMPTS]
    print(f"\n{len(prompts)} prompts, up to {NEW_TOKENS} new tokens each, greedy, batches of {BATCH}; "
          "n-grams of SmolLM2 token ids\n")
    print(f"{'decoder':30s} {'rep-4':>7s} {'distinct-1':>11s} {'distinct-2':>11s} {'distinct-3':>11s} "
          f"{'tokens':>7s} {'s':>7s}")
    samples = {}
    for name, (model, model_tokenizer, processors) in decoders.items():
        eos = {model_tokenizer.eos_token_id, *([model.generation_config.eos_token_id]
                                              if isinstance(model.generation_config.eos_token_id, int)
                                              else model.generation_config.eos_token_id or [])}
        texts, seconds = continue_prompts(model, model_tokenizer, prompts, processors, eos)
        continuations = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        n_tokens = sum(len(c) for c in continuations)
        rep4 = sum(repeated_ngram_rate(c) for c in continuations) / len(continuations)
        print(f"{name:30s} {rep4:7.3f} {distinct(continuations, 1):11.3f} {distinct(continuations, 2):11.3f} "
              f"{distinct(continuations, 3):11.3f} {n_tokens / len(continuations):7.1f} {seconds:7.0f}", flush=True)
        samples[name] = texts
    for k in range(min(3, len(prompts))):
        print(f"\nPrompt: {prompts[k]!r}")
        for name, texts in samples.items():
            print(f"  {name}: {texts[k]!r}")


if __name__ == "__main__":
    main()
