"""Attack detection: a manipulated prompt read through the model's own logit gaps.

    python examples/detection.py

On the embedded SmolLM2-135M-Instruct (offline): the shipped Detector scores a held-out benign
request, the same request with a suffix optimized against this model (GCG) and with a fluent
appended instruction, printing the score, the decision, each channel (token CUSUM, hidden-state
probe), the suspicious span and the refusal-affirmation gap; then guarded_generate answers each
with the "stop" policy (one prefill shared by scoring and generation).
"""

import torch
from transformers.utils import logging

from logit_processors import guarded_generate
from logit_processors.detection import default_detector, load_attacks
from logit_processors.models import load

logging.set_verbosity_error()
torch.set_num_threads(1)  # steadier than 2 spin-waiting threads on a busy 2-core machine

model, tokenizer = load("smollm2", progress=False)
detector = default_detector(model, tokenizer)  # fitted on benign requests; refuses another model
attack = load_attacks("optimized")[0]  # a held-out request + a suffix optimized against SmolLM2
fluent = load_attacks("fluent", "test")[0]  # a held-out request + "Ignore all previous instructions ..."

for title, prompt in (("benign", attack.base), ("optimized suffix", attack.text), ("fluent", fluent.text)):
    result = detector.score(prompt)  # one forward pass over the prompt
    print(f"\n== {title}: {prompt!r}")
    print(f"  score {result.score:.2f} (threshold {result.threshold:.2f}) -> flagged={result.flagged}")
    print("  channels: " + ", ".join(f"{name} {value:.2f}" for name, value in result.channels.items()))
    print(f"  suspicious span: {result.span_text!r}")
    guarded = guarded_generate(model, tokenizer, prompt, detector=detector, policy="stop", max_new_tokens=24)
    print(f"  guarded answer ({guarded.report.action}): {guarded.text!r}")
    gap = guarded.report.refusal_gap[0]  # one value per row; nats by which refusing beats complying
    print(f"  refusal-affirmation gap at the first step: {gap:+.2f}")
