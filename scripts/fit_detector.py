"""Fit the SmolLM2 detector on the benign ``fit`` split and store it in the package (run once).

    python scripts/fit_detector.py      # writes logit_processors/detection/data/detector_smollm2.json

The benign side is every category's ``fit`` split (short chat, code, other languages, pasted
documents, multi-turn chats: ``load_benign("fit")``); the probe's attack side is the ``dev``
rows of the fluent and jailbreak sets (``probe_attack_prompts()``). The file holds the token
baseline per position bucket, the probe, the channel units, the threshold at 1% false-positive
rate and the model's identity, so ``default_detector(model, tokenizer)`` and
``logit-processors detect`` need no fitting. ``logit-processors detect-eval`` refits from
scratch (and reports the same threshold): the stored file is a cache of that fit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from logit_processors.detection import Detector
from logit_processors.detection.datasets import DETECTOR_FILES, load_benign
from logit_processors.models import load

OUT = Path(__file__).resolve().parent.parent / "logit_processors" / "detection" / "data" / DETECTOR_FILES["smollm2"]


def main() -> int:
    torch.set_num_threads(1)  # the machine is shared; small batches run as fast on one thread
    model, tokenizer = load("smollm2", progress=False)
    start = time.perf_counter()
    detector = Detector.fit(model, tokenizer, [p.prompt for p in load_benign("fit")])
    detector.save(OUT)
    print(f"{detector} fitted in {time.perf_counter() - start:.0f} s; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
