"""Composable logits processors for Hugging Face ``generate()``.

Logits are log-counts; temperature divides them, masks set them to ``-inf``, ensembles add
log-probabilities or log-odds, calibration makes confidences mean what they say, and the gaps
between logits are margins that reveal uncertainty or manipulation.
"""

from .calibration import CalibratedTemperature, calibrate_members
from .core import Chain, MaskingProcessor, Processor
from .detection import DetectionResult, Detector
from .ensemble import ContrastiveDecoding, LogOddsEnsemble
from .gaps import LogitGapMonitor
from .guard import GapGuard, guarded_generate
from .masking import TokenMask, VocabFilter
from .phrase_ban import PhraseBan
from .temperature import EntropyTemperature, Temperature
from .truncation import MinP, TopK, TopP

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
    "Temperature",
    "TokenMask",
    "TopK",
    "TopP",
    "VocabFilter",
    "calibrate_members",
    "guarded_generate",
]
__version__ = "0.1.0"
