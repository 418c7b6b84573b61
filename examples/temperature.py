"""Temperature: divide the logits by T. Fixed, per row, or chosen per step from the entropy.

    python examples/temperature.py

Logits are log-counts: p_i / p_j = exp(z_i - z_j). Dividing by T multiplies every such
log-ratio by 1/T, so T < 1 sharpens the distribution, T > 1 flattens it, and the ranking (the
argmax) never changes.
"""

import torch
from transformers.utils import logging

from logit_processors import Chain, EntropyTemperature, Temperature, numerics
from logit_processors.models.tiny_gpt2 import load_tiny_gpt2

logging.set_verbosity_error()
logging.disable_progress_bar()
model, tokenizer = load_tiny_gpt2()

# 1. One next-token distribution at three temperatures.
prompt = "The import statement"
inputs = tokenizer(prompt, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[:, -1, :]
top = logits.topk(5).indices[0]
print(f"next token after {prompt!r}:")
print("  T     entropy  " + "  ".join(f"{tokenizer.decode([int(i)])!r:>8}" for i in top))
for t in (0.5, 1.0, 2.0):
    scores = Temperature(t)(inputs["input_ids"], logits)
    probs = numerics.softmax(scores)[0]
    entropy = numerics.entropy(scores)[0]
    print(f"  {t:<5} {entropy:7.3f}  " + "  ".join(f"{probs[i]:8.3f}" for i in top))

# Shift invariance: only differences of logits matter, so softmax subtracts the row maximum
# first (log-sum-exp). A naive exp() of shifted logits overflows; the stable softmax does not.
shifted = logits + 1000.0
print(f"naive sum(exp(z + 1000)) = {float(torch.exp(shifted).sum())}")
difference = (numerics.softmax(shifted) - numerics.softmax(logits)).abs().max()
print(f"stable softmax(z + 1000) vs softmax(z): max difference {float(difference):.1e} (float32 rounding of z + 1000)")

# 2. Per-row temperatures in one batch: one entry per prompt, expanded over num_return_sequences.
prompts = ["A function definition is", "Exceptions"]
batch = tokenizer(prompts, return_tensors="pt", padding=True)
per_prompt = Temperature(torch.tensor([0.3, 1.5]))  # prompt 0 focused, prompt 1 adventurous
torch.manual_seed(0)
with torch.no_grad():
    out = model.generate(
        **batch, logits_processor=Chain(per_prompt), do_sample=True, top_k=0,
        num_return_sequences=2, max_new_tokens=16,
    )
print("\nper-prompt temperature [0.3, 1.5], 2 samples each:")
for row, ids in enumerate(out[:, batch["input_ids"].shape[1] :]):
    print(f"  T={per_prompt.temperature[row // 2]:.1f} {prompts[row // 2]!r} -> {tokenizer.decode(ids, skip_special_tokens=True)!r}")

# 3. EntropyTemperature: T = min_t + (max_t - min_t) * (H / log n) ** exponent, per row and step.
dyn = EntropyTemperature(min_t=0.5, max_t=1.5, exponent=1.0)
confident = torch.tensor([[8.0, 0.0, 0.0, 0.0]])
uncertain = torch.tensor([[1.0, 0.5, 1.5, 1.0]])
print("\nEntropyTemperature(0.5, 1.5): T chosen for a confident row and an uncertain row:")
for name, row in (("confident", confident), ("uncertain", uncertain)):
    h = float(numerics.normalized_entropy(row)[0])
    print(f"  {name} logits {row.tolist()[0]}: H / log n = {h:.3f} -> T = {float(dyn.row_temperatures(row)[0]):.3f}")

with torch.no_grad():
    out = model.generate(
        **inputs, logits_processor=Chain(dyn), do_sample=False, max_new_tokens=12,
        output_logits=True, return_dict_in_generate=True,
    )
print(f"  during generate() for {prompt!r}, T per step:")
print("   ", " ".join(f"{float(dyn.row_temperatures(step)[0]):.2f}" for step in out.logits))
