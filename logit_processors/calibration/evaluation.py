"""Held-out evaluation: calibration metrics before and after a fitted temperature, in one pass."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..runtime.streamed_logits import DEFAULT_MAX_LENGTH, TeacherForcedLogits, text_windows
from ..validate import positive_finite_float
from .diagrams import plot_reliability
from .metrics import DEFAULT_BINS, Binning, Predictions
from .temperature import CalibratedTemperature, window_length


def evaluate(
    model,
    tokenizer,
    texts: str | Sequence[str] | Sequence[Sequence[int]],
    temperatures: Sequence[float] = (1.0,),
    *,
    batch_size: int = 8,
    max_length: int = DEFAULT_MAX_LENGTH,
    add_special_tokens: bool = True,
    progress: bool = False,
) -> list[Predictions]:
    """Per-position top-1 :class:`~logit_processors.calibration.metrics.Predictions` of ``texts``
    at each temperature, from one streamed forward pass."""
    temperatures = [positive_finite_float("temperature", t) for t in temperatures]
    windows = text_windows(tokenizer, texts, max_length=window_length(model, max_length),
                           add_special_tokens=add_special_tokens)
    parts: list[list[Predictions]] = [[] for _ in temperatures]
    for logits, targets in TeacherForcedLogits(model, windows, batch_size=batch_size, progress=progress,
                                               description="evaluating"):
        for part, t in zip(parts, temperatures, strict=True):
            part.append(Predictions.from_logits(logits, targets, t))
    return [Predictions.concat(part) for part in parts]


@dataclass
class CalibrationReport:
    """Held-out metrics before (``T = 1``) and after calibration; ``str()`` is a table."""

    temperature: float
    before: Predictions
    after: Predictions
    n_bins: int = DEFAULT_BINS

    def summary(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "n_bins": self.n_bins,
            "uncalibrated": self.before.summary(self.n_bins),
            "calibrated": self.after.summary(self.n_bins),
        }

    def __str__(self) -> str:
        names = ("nll", "ece_width", "ece_mass", "brier", "accuracy", "confidence")
        header = ["", "NLL", f"ECE-{self.n_bins} width", f"ECE-{self.n_bins} mass", "Brier", "accuracy", "confidence"]
        lines = [
            f"held-out: {len(self.before):,} positions; calibrated temperature T = {self.temperature:.4f}",
            f"{header[0]:<16}" + "".join(f"{h:>15}" for h in header[1:]),
        ]
        for label, preds in (("T = 1", self.before), (f"T = {self.temperature:.4f}", self.after)):
            s = preds.summary(self.n_bins)
            lines.append(f"{label:<16}" + "".join(f"{s[n]:>15.4f}" for n in names))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None, *, binning: Binning = "width", title: str | None = None):
        """Reliability diagrams before and after (see :func:`~logit_processors.calibration.diagrams.plot_reliability`)."""
        return plot_reliability({"uncalibrated (T = 1)": self.before, f"calibrated (T = {self.temperature:.3f})": self.after},
                                path, n_bins=self.n_bins, binning=binning, title=title)


def report(
    model,
    tokenizer,
    texts: str | Sequence[str] | Sequence[Sequence[int]],
    calibration: CalibratedTemperature | float,
    *,
    n_bins: int = DEFAULT_BINS,
    **evaluate_kwargs: Any,
) -> CalibrationReport:
    """NLL, ECE (equal-width and equal-mass), Brier, accuracy on held-out ``texts``, before and
    after ``calibration`` (a :class:`CalibratedTemperature` or a plain temperature), in one pass.

    Example:
        >>> from logit_processors.models import load_tiny_gpt2
        >>> from logit_processors.models.tiny_gpt2 import corpus
        >>> model, tokenizer = load_tiny_gpt2()
        >>> result = report(model, tokenizer, corpus()[:2], 1.2)
        >>> print(str(result).splitlines()[1].split())
        ['NLL', 'ECE-15', 'width', 'ECE-15', 'mass', 'Brier', 'accuracy', 'confidence']
        >>> figure = result.plot()                        # reliability diagrams; needs matplotlib
    """
    temperature = getattr(calibration, "temperature", calibration)
    before, after = evaluate(model, tokenizer, texts, (1.0, temperature), **evaluate_kwargs)
    return CalibrationReport(float(temperature), before, after, n_bins)
