"""Masking: set a token's logit to -inf so its count exp(z) is 0 and it can never be chosen.

    python examples/masking.py

TokenMask (allow/deny lists, per-row masks), VocabFilter (a predicate on each token's text),
PhraseBan (multi-token phrases) and the fully-masked-row policy, on the tiny GPT-2.
"""

import torch
from transformers.utils import logging

from logit_processors import Chain, PhraseBan, TokenMask, VocabFilter
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2

logging.set_verbosity_error()
logging.disable_progress_bar()
model, tokenizer = load_tiny_gpt2()
prompts = ["The import statement", "A function definition is"]
inputs = tokenizer(prompts, return_tensors="pt", padding=True)


def run(title, processors=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs, logits_processor=processors, max_new_tokens=20, do_sample=True, top_k=0, **kwargs)
    print(f"\n== {title}")
    for prompt, ids in zip(prompts, out[:, inputs["input_ids"].shape[1] :]):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        ended = " (ended with EOS)" if tokenizer.eos_token_id in ids.tolist() else ""
        print(f"  {prompt!r} -> {text!r}{ended}")
    return out


run("no processors")

# Deny-list: every token whose text contains a double quote.
denied = [i for token, i in tokenizer.get_vocab().items() if '"' in tokenizer.convert_tokens_to_string([token])]
run(f"TokenMask(deny=<{len(denied)} ids of tokens containing a quote>)", Chain(TokenMask(deny=denied)))

# Allow-list: only these words (and their leading-space forms) may be generated.
words = " the a an is of to and value name function class object"
allowed = sorted(set(tokenizer.encode(words)) | set(tokenizer.encode(words.strip())))
run("TokenMask(allow=<a dozen words>)", Chain(TokenMask(allow=allowed)))

# Per-row masks: a bool tensor [rows, vocab], True = allowed; one row per prompt.
per_row = torch.ones(2, len(tokenizer), dtype=torch.bool)
per_row[0, denied] = False  # prompt 0: no quotes
per_row[1] = False
per_row[1, allowed] = True  # prompt 1: only the allowed words
run("TokenMask(allow=<bool mask [2, V]>): row 0 no quotes, row 1 only the words", Chain(TokenMask(allow=per_row)))

# VocabFilter: a predicate over each token's decoded text, evaluated once for the vocabulary.
# Columns beyond the tokenizer (the padded LM head: 2,048 vs 2,000 here) are masked too.
letters_only = VocabFilter(tokenizer, lambda s: s.strip().isalpha())
run(f"VocabFilter(letters only), {letters_only}", Chain(letters_only))

# PhraseBan: mask the token that would complete a banned phrase, in each common tokenization.
# The prompt counts as history: "A function definition is" may not continue with " the".
ban = PhraseBan(["is the", "the value"], tokenizer)
run(f"{ban}", Chain(ban))

# Fully masked rows: by default a ValueError; with on_empty="keep_eos" the row ends with EOS.
nothing = torch.zeros(2, len(tokenizer), dtype=torch.bool)
nothing[0] = True  # row 0 may say anything; row 1 nothing at all
try:
    run("TokenMask(allow=<row 1 empty>)", Chain(TokenMask(allow=nothing)))
except ValueError as err:
    print(f"\n== on_empty='raise' (the default):\n  ValueError: {err}")
out = run(
    "on_empty='keep_eos': row 1 keeps only EOS and ends",
    Chain(TokenMask(allow=nothing, on_empty="keep_eos", eos_token_id=tokenizer.eos_token_id)),
)
assert out[1, inputs["input_ids"].shape[1]] == tokenizer.eos_token_id
