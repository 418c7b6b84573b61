"""Composable logits processors for Hugging Face ``generate()``.

Logits are log-counts; temperature divides them, masks set them to ``-inf``, ensembles add
log-probabilities or log-odds, calibration makes confidences mean what they say, and the gaps
between logits are margins that reveal uncertainty or manipulation.

One room per capability (README, "Layout"): :mod:`.processors`, :mod:`.ensemble`, :mod:`.gaps`,
:mod:`.calibration`, :mod:`.detection`, :mod:`.spec` (processors as JSON), :mod:`.report`, :mod:`.cli`
and :mod:`.vllm` (serving them in vLLM; imports vLLM only when used), on the ground floor of
:mod:`.numerics`, :mod:`.validate` and the contract in :mod:`.core`, with :mod:`.runtime` (models
run beside ``generate()``) and :mod:`.models` (loading) in between. The names below are the
public face; everything else is reached by its module path.
"""

from .version import __version__  # noqa: I001  (first: nothing below may need the package half-imported)
from .calibration import CalibratedTemperature, calibrate_members
from .core import Chain, MaskingProcessor, Processor
from .detection import DetectionResult, Detector, GapGuard, RefusalGap, guarded_generate
from .ensemble import ContrastiveDecoding, LogOddsEnsemble, combine_log_probs
from .gaps import LogitGapMonitor, Trace, gap_stats, token_stats
from .processors import EntropyTemperature, MinP, PhraseBan, Temperature, TokenMask, TopK, TopP, VocabFilter
from .spec import from_spec, to_spec

__all__ = [
    "CalibratedTemperature",
    "Chain",
    "ContrastiveDecoding",
    "DetectionResult",
    "Detector",
    "EntropyTemperature",
    "GapGuard",
    "LogOddsEnsemble",
    "LogitGapMonitor",
    "MaskingProcessor",
    "MinP",
    "PhraseBan",
    "Processor",
    "RefusalGap",
    "Temperature",
    "TokenMask",
    "TopK",
    "TopP",
    "Trace",
    "VocabFilter",
    "__version__",
    "calibrate_members",
    "combine_log_probs",
    "from_spec",
    "gap_stats",
    "guarded_generate",
    "to_spec",
    "token_stats",
]
