"""Quick start: generate with a stack of processors on a tiny GPT-2 built locally, offline.

    python examples/quickstart.py

The first run trains a 2-layer GPT-2 and a byte-level BPE tokenizer on the help text that ships
with Python (``pydoc_data.topics``) and caches them under ~/.cache/logit_processors (about 15 s
of CPU time); later runs load the cache. Nothing is downloaded.
"""

import torch
from transformers.utils import logging

from logit_processors import EntropyTemperature, PhraseBan, Temperature, TokenMask, TopP, VocabFilter
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2

logging.set_verbosity_error()
logging.disable_progress_bar()

model, tokenizer = load_tiny_gpt2()
n_params = sum(p.numel() for p in model.parameters())
print(
    f"tiny GPT-2: {n_params:,} parameters, {len(tokenizer)} tokens, "
    f"LM head {model.config.vocab_size} columns (padded, like GPT-2's 50,257 -> 50,304)"
)

prompts = ["The import statement", "A function definition is", "Exceptions"]
inputs = tokenizer(prompts, return_tensors="pt", padding=True)  # left-padded batch


def run(title, seed=None, **kwargs):
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, **kwargs)
    print(f"\n== {title}")
    for prompt, ids in zip(prompts, out[:, inputs["input_ids"].shape[1] :]):
        print(f"  {prompt!r} -> {tokenizer.decode(ids, skip_special_tokens=True)!r}")


run("greedy, no processors", do_sample=False)

# The tiny model loves quotes, pipes, line breaks and "the the". Keep ASCII tokens without
# quotes, pipes or line breaks, never end early (deny EOS), ban the phrase "the the", adapt
# the temperature to each step's uncertainty, then sample from the top-90% nucleus.
stack = (
    VocabFilter(tokenizer, lambda s: s.isascii() and not set(s) & set('"|\n'))
    | TokenMask(deny=[tokenizer.eos_token_id])
    | PhraseBan(["the the"], tokenizer)
    | EntropyTemperature(0.6, 1.2)
    | TopP(0.9)
)
print(f"\nprocessors: {stack}")
run("greedy with the stack", logits_processor=stack, do_sample=False)
# HF's own temperature/top-k/top-p would run AFTER our processors: keep them off (top_k=0).
run("sampled with the stack (seed 0)", seed=0, logits_processor=stack, do_sample=True, top_k=0)
run("the same, Temperature(0.5) first", seed=0, logits_processor=Temperature(0.5) | stack, do_sample=True, top_k=0)
