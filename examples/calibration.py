"""Calibration: fit the temperature that makes SmolLM2's confidences mean what they say.

    python examples/calibration.py [--png reliability.png]

Temperature scaling (Guo et al., 2017): one T, fitted by minimizing the next-token NLL on
texts (CPython's pydoc help topics, every other topic), checked on the held-out topics (NLL,
top-1 ECE with 15 equal-width and equal-mass bins, Brier), saved with the model's identity,
loaded back (refused for any other model) and applied as a processor inside generate().
"""

import argparse
import os
import tempfile
from pathlib import Path

import torch
from transformers.utils import logging

from logit_processors import CalibratedTemperature
from logit_processors.calibration import report
from logit_processors.models import load
from logit_processors.models.tiny_gpt2 import corpus

logging.set_verbosity_error()
torch.set_num_threads(1)  # steadier than 2 spin-waiting threads on a busy 2-core machine
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--png", type=Path, help="write the reliability diagrams (before / after) here")
args = parser.parse_args()

quick = bool(os.environ.get("LOGIT_PROCESSORS_EXAMPLE_QUICK"))  # the test suite runs a short version
model, tokenizer = load("smollm2", progress=False)
topics = [t[:700] for t in corpus() if len(t) > 400][: 8 if quick else 32]
fit_texts, heldout_texts = topics[0::2], topics[1::2]

calibration = CalibratedTemperature.fit(model, tokenizer, fit_texts)
print(f"fitted on {len(fit_texts)} topics: T = {calibration.temperature:.4f}",
      "(T > 1: SmolLM2 was overconfident here)" if calibration.temperature > 1 else "(T < 1: underconfident)")

held_out = report(model, tokenizer, heldout_texts, calibration)
print(f"\nheld-out ({len(heldout_texts)} other topics), before / after:\n{held_out}")
if args.png:
    held_out.plot(args.png)
    print(f"wrote {args.png}")

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "calib.json"
    calibration.save(path)  # temperature, fit statistics and the model's identity
    calibration = CalibratedTemperature.load(path, model, tokenizer)

messages = [{"role": "user", "content": "Write one sentence about the sea."}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
torch.manual_seed(0)
out = model.generate(**inputs, logits_processor=[calibration], do_sample=True, top_k=0, max_new_tokens=24)
print("\nsampled with the calibrated temperature:",
      repr(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)))
