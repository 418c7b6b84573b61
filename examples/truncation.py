"""Truncation: keep only the head of the distribution (top-k, top-p, min-p) before sampling.

    python examples/truncation.py

The long tail of unlikely tokens carries enough total mass that sampling from it now and then
derails the text. TopK keeps a fixed number of tokens, TopP the smallest head holding mass p,
MinP every token at least p times as likely as the best one. They keep exactly the tokens that
Hugging Face's top_k / top_p / min_p warpers keep, but as processors they compose with the rest
of a Chain, in the order you write.
"""

import torch
from transformers.utils import logging

from logit_processors import Chain, MinP, Temperature, TopK, TopP, numerics
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2

logging.set_verbosity_error()
logging.disable_progress_bar()
model, tokenizer = load_tiny_gpt2()

# 1. What each one keeps of one next-token distribution.
prompt = "The import statement is"
inputs = tokenizer(prompt, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[:, -1, :]
probs = numerics.softmax(logits)[0]
print(f"next token after {prompt!r}: {logits.shape[-1]} columns, top-1 probability {float(probs.max()):.3f}")
for proc in (TopK(10), TopP(0.5), TopP(0.9), MinP(0.1), MinP(0.1, min_tokens_to_keep=20)):
    kept = torch.isfinite(proc(inputs["input_ids"], logits))[0]
    print(f"  {proc!r:<55} keeps {int(kept.sum()):4d} tokens holding {float(probs[kept].sum()):.3f} of the mass")

# 2. Sampling through generate(): the same seed gives the same text as HF's own warpers.
prompts = ["The import statement", "A function definition is"]
batch = tokenizer(prompts, return_tensors="pt", padding=True)


def sample(**kwargs):
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, max_new_tokens=20, **kwargs)
    return out[:, batch["input_ids"].shape[1] :]


for ours, theirs in (
    (TopK(10), {"top_k": 10}),
    (TopP(0.9), {"top_p": 0.9, "top_k": 0}),
    (MinP(0.1), {"min_p": 0.1, "top_k": 0}),
):
    new = sample(logits_processor=Chain(ours), top_k=0)  # top_k=0: HF's default warpers off
    same = torch.equal(new, sample(**theirs))
    print(f"\n== {ours!r} (identical to generate(**{theirs}): {same})")
    for prompt, ids in zip(prompts, new):
        print(f"  {prompt!r} -> {tokenizer.decode(ids, skip_special_tokens=True)!r}")

# 3. Order matters in a chain: temperature first flattens the distribution, so the nucleus grows.
for chain in (TopP(0.9) | Temperature(1.5), Temperature(1.5) | TopP(0.9)):
    kept = torch.isfinite(chain(inputs["input_ids"], logits)).sum()
    print(f"\n{chain!r}: {int(kept)} tokens survive", end="")
print()
