"""Fit the SmolLM2 detector on the benign ``fit`` split and store it in the package (run once).

    python scripts/fit_detector.py      # writes logit_processors/data/detector_smollm2.json

The file holds the per-position-bucket baseline, the threshold at 1% false-positive rate and
the model's identity, so ``default_detector(model, tokenizer)`` and ``logit-processors detect``
need no fitting. ``logit-processors detect-eval`` refits from scratch (and reports the same
threshold): the stored file is a cache of that fit, not a different one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from logit_processors.detection import Detector
from logit_processors.detection.datasets import DETECTOR_FILES, load_benign
from logit_processors.models import load

OUT = Path(__file__).resolve().parent.parent / "logit_processors" / "data" / DETECTOR_FILES["smollm2"]


def main() -> int:
    model, tokenizer = load("smollm2", progress=False)
    start = time.perf_counter()
    detector = Detector.fit(model, tokenizer, [p.text for p in load_benign("fit")])
    detector.save(OUT)
    print(f"{detector} fitted in {time.perf_counter() - start:.0f} s; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
