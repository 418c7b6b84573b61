"""Attack detection: flag manipulated prompts from the model's own logits.

The room, bottom up:

* :mod:`.prompt_stats`: per-token statistics of a prompt's user text, from one forward pass;
* :mod:`.refusal_gap`: the refusal-affirmation logit gap of the first decoding step;
* :mod:`.detector`: :class:`Detector` (benign baseline, CUSUM, conformal threshold) and its
  :class:`DetectionResult`;
* :mod:`.baselines`: the published perplexity filters it is measured against;
* :mod:`.datasets`: the benign prompts and attack sets that ship with the package;
* :mod:`.evaluation`: the evaluation table (AUROC, TPR at 1% FPR, span localization);
* :mod:`.guard`: :class:`GapGuard` and :func:`guarded_generate`, detection inside ``generate()``
  sharing the prompt's prefill.
"""

from .baselines import PerplexityFilter, WindowedPerplexityFilter
from .datasets import load_attacks, load_benign, read_prompts
from .detector import DetectionResult, Detector, default_detector
from .guard import GapGuard, GuardTriggered, SuspiciousPromptWarning, guarded_generate
from .prompt_stats import PromptStats, prompt_stats
from .refusal_gap import RefusalGap

__all__ = [
    "DetectionResult",
    "Detector",
    "GapGuard",
    "GuardTriggered",
    "PerplexityFilter",
    "PromptStats",
    "RefusalGap",
    "SuspiciousPromptWarning",
    "WindowedPerplexityFilter",
    "default_detector",
    "guarded_generate",
    "load_attacks",
    "load_benign",
    "read_prompts",
    "prompt_stats",
]
