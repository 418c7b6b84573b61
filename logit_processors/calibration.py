"""Calibrated temperature scaling: fit one temperature on text, save it, apply it in ``generate()``.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") is the
standard post-hoc calibration of a classifier: divide the logits by the single ``T`` that
minimizes the negative log-likelihood (NLL) of held-out labels. A language model's next-token
distribution is a classifier at every position, so :meth:`CalibratedTemperature.fit` scores a
text teacher-forced (every position predicts the next token) and finds the ``T`` that minimizes
the NLL of all of them. Dividing by ``T`` never changes the top token, only how sure the model
claims to be: ``T > 1`` when it was overconfident, ``T < 1`` when underconfident.

Calibration is the precondition for adding log-odds across models: for calibrated,
conditionally independent forecasters, log-odds add (odds multiply).
:class:`logit_processors.LogOddsEnsemble` takes fitted calibrations as ``temperatures``, and
:func:`calibrate_members` fits one per model on the same texts.

The fit is exact (the NLL minimum to about ``1e-6`` relative), streams the logits chunk by chunk
in bounded memory, and costs one forward pass over the text plus a few ``exp`` passes per
position: see :mod:`logit_processors.calibration_fit`. The metrics (NLL, ECE with equal-width
and equal-mass bins, top-label Brier, reliability diagrams) are in
:mod:`logit_processors.calibration_metrics`; :func:`report` gives them before and after on
held-out text.

Example:
    >>> from logit_processors.calibration import CalibratedTemperature, report
    >>> from logit_processors.testing import corpus, load_tiny_gpt2                  # doctest: +SKIP
    >>> model, tokenizer = load_tiny_gpt2()                                          # doctest: +SKIP
    >>> texts = corpus()                                                             # doctest: +SKIP
    >>> calibration = CalibratedTemperature.fit(model, tokenizer, texts[:40])        # doctest: +SKIP
    >>> calibration.temperature                                                      # doctest: +SKIP
    >>> calibration.save("calibration.json")                                         # doctest: +SKIP
    >>> calibration = CalibratedTemperature.load("calibration.json", model, tokenizer)  # refuses another model  # doctest: +SKIP
    >>> print(report(model, tokenizer, texts[40:60], calibration))                   # doctest: +SKIP
    >>> out = model.generate(**inputs, logits_processor=[calibration], do_sample=True, top_k=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .calibration_fit import (
    DEFAULT_MAX_LENGTH,
    TeacherForcedLogits,
    TemperatureFit,
    fit_temperature,
    optimal_temperature,
    text_windows,
)
from .calibration_metrics import DEFAULT_BINS, Binning, Predictions, plot_reliability
from .core import positive_finite_float, positive_int
from .identity import check_identity, model_identity
from .prompt_stats import context_length
from .temperature import Temperature

__all__ = [
    "CalibratedTemperature",
    "CalibrationReport",
    "Predictions",
    "TeacherForcedLogits",
    "TemperatureFit",
    "calibrate_members",
    "evaluate",
    "fit_temperature",
    "optimal_temperature",
    "plot_reliability",
    "report",
    "text_windows",
]

JSON_FORMAT = "logit_processors.calibration.CalibratedTemperature"
JSON_VERSION = 1


# --------------------------------------------------------------------------------------------
# The processor


class CalibratedTemperature(Temperature):
    """A fitted temperature: a :class:`~logit_processors.Temperature` that remembers its model.

    Build it with :meth:`fit` (a model and texts), :meth:`fit_logits` (in-memory logits and
    labels, e.g. a classifier's) or :meth:`load`. It divides the scores by ``.temperature``
    like ``Temperature(T)``, and it refuses a model it was not fitted on:

    * :meth:`load` with ``model`` (and ``tokenizer``) compares the saved identity (model type,
      vocabulary size, config hash, tokenizer size, embedding and head weight norms; see
      :mod:`logit_processors.identity`) and raises a ``ValueError`` naming what differs;
    * every call checks, for free, that the scores have as many columns as the fitted model's LM
      head: the one mismatch that needs no model to detect.

    Guo et al. (2017), "On Calibration of Modern Neural Networks", Section 4.2.

    Example:
        >>> import torch
        >>> from logit_processors.calibration import CalibratedTemperature
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = 4 * torch.randn(5_000, 8, generator=g)            # overconfident by 2x
        >>> labels = torch.multinomial(torch.softmax(logits / 2, -1), 1, generator=g).squeeze(1)
        >>> calibration = CalibratedTemperature.fit_logits(logits, labels)
        >>> round(calibration.temperature, 1)
        2.0
        >>> calibration(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 8)).shape
        torch.Size([1, 8])
    """

    def __init__(self, temperature: float, *, columns: int | None = None, identity: dict[str, Any] | None = None,
                 fit: dict[str, Any] | None = None):
        if isinstance(temperature, torch.Tensor):
            raise TypeError("CalibratedTemperature takes one float temperature; use Temperature for per-row tensors")
        super().__init__(temperature)
        self.columns = None if columns is None else positive_int("columns", columns)
        self.model_identity = identity
        self.fit_stats = dict(fit or {})

    # -- applying ----------------------------------------------------------------------------

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.columns is not None and scores.shape[-1] != self.columns:
            raise ValueError(
                f"this calibration was fitted on a model with {self.columns} vocabulary columns "
                f"({self._model_name()}), but the scores have {scores.shape[-1]}: it belongs to a different model"
            )
        return super().process(input_ids, scores)

    def check_model(self, model, tokenizer=None) -> None:
        """ValueError naming the differences unless ``model`` is the model this was fitted on."""
        if self.model_identity is None:
            raise ValueError("this calibration records no model identity (fitted on raw logits); nothing to check")
        check_identity(self.model_identity, model, tokenizer, what="this calibration")

    def _model_name(self) -> str:
        return (self.model_identity or {}).get("name_or_path") or "unnamed model"

    def _repr_fields(self) -> dict[str, object]:
        return {"temperature": round(self.temperature, 6), "model": self._model_name()}

    # -- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        model,
        tokenizer,
        texts: str | Sequence[str] | Sequence[Sequence[int]],
        *,
        batch_size: int = 8,
        max_length: int = DEFAULT_MAX_LENGTH,
        add_special_tokens: bool = True,
        progress: bool = True,
        initial_temperature: float | None = None,
    ) -> CalibratedTemperature:
        """Fit the NLL-minimizing temperature on ``texts`` (teacher-forced, every position).

        ``texts``: a string, a list of strings, or token-id lists. Long texts are cut into windows
        of ``max_length`` tokens (:func:`text_windows`; at most the model's context length);
        ``batch_size`` windows run per forward pass. One forward pass over the text (see the module
        docstring), with a progress bar.
        """
        max_length = window_length(model, max_length)
        windows = text_windows(tokenizer, texts, max_length=max_length, add_special_tokens=add_special_tokens)
        source = TeacherForcedLogits(model, windows, batch_size=batch_size, progress=progress, description="calibrating")
        result = fit_temperature(source, initial_temperature=initial_temperature)
        stats = {**asdict(result), "sequences": len(windows), "max_length": max_length}
        stats.pop("temperature")
        return cls(result.temperature, columns=_head_columns(model), identity=model_identity(model, tokenizer),
                   fit=stats)

    @classmethod
    def fit_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> CalibratedTemperature:
        """Fit on in-memory ``logits [N, V]`` and ``labels [N]`` (exact Newton; e.g. a classifier)."""
        temperature = optimal_temperature(logits, labels)
        before = Predictions.from_logits(logits, labels).nll.mean()
        after = Predictions.from_logits(logits, labels, temperature).nll.mean()
        stats = {"nll": float(after), "nll_uncalibrated": float(before), "positions": int(labels.shape[0])}
        return cls(temperature, columns=int(logits.shape[-1]), fit=stats)

    # -- saving ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "temperature": self.temperature,
            "columns": self.columns,
            "model": self.model_identity,
            "fit": self.fit_stats,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the calibration as JSON: temperature, LM-head width, model identity, fit statistics."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1, allow_nan=False)
            f.write("\n")

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> CalibratedTemperature:
        if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
            raise ValueError(f"not a {JSON_FORMAT} document (missing or wrong 'format' field)")
        if document.get("version") != JSON_VERSION:
            raise ValueError(f"unsupported {JSON_FORMAT} version {document.get('version')!r}; expected {JSON_VERSION}")
        return cls(document["temperature"], columns=document.get("columns"), identity=document.get("model"),
                   fit=document.get("fit"))

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, tokenizer=None) -> CalibratedTemperature:
        """Read a saved calibration; with ``model`` (and ``tokenizer``), refuse a different model."""
        with open(path, encoding="utf-8") as f:
            try:
                document = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not a calibration file (invalid JSON: {error})") from error
        calibration = cls.from_dict(document)
        if model is not None:
            if calibration.model_identity is None:
                raise ValueError(f"{path} records no model identity (fitted on raw logits); it cannot be checked")
            check_identity(calibration.model_identity, model, tokenizer, what=f"the calibration {path}")
        return calibration


def window_length(model, max_length: int) -> int:
    """``max_length``, capped at the model's context length (longer text is cut into more windows,
    never truncated)."""
    max_length = positive_int("max_length", max_length)
    limit = context_length(model)
    return max_length if limit is None else min(max_length, limit)


def _head_columns(model) -> int:
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def calibrate_members(
    models: Sequence[Any],
    tokenizer,
    texts: str | Sequence[str],
    **fit_kwargs: Any,
) -> list[CalibratedTemperature]:
    """One :class:`CalibratedTemperature` per model, all fitted on the same ``texts``.

    ``tokenizer`` is shared (the members of a log-odds ensemble map tokens to ids identically),
    or a list with one per model. The result
    is what :class:`~logit_processors.LogOddsEnsemble` takes as ``temperatures`` (primary first,
    in the order given). ``fit_kwargs`` go to :meth:`CalibratedTemperature.fit`.

    Example:
        >>> calibrations = calibrate_members([model, other], tokenizer, texts)           # doctest: +SKIP
        >>> ensemble = LogOddsEnsemble([other], combine="logodds", temperatures=calibrations)  # doctest: +SKIP
    """
    tokenizers = list(tokenizer) if isinstance(tokenizer, (list, tuple)) else [tokenizer] * len(models)
    if len(tokenizers) != len(models):
        raise ValueError(f"got {len(models)} models but {len(tokenizers)} tokenizers; give one, or one per model")
    return [CalibratedTemperature.fit(model, tok, texts, **fit_kwargs) for model, tok in zip(models, tokenizers, strict=True)]


# --------------------------------------------------------------------------------------------
# Held-out evaluation


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
    """Per-position top-1 :class:`~logit_processors.calibration_metrics.Predictions` of ``texts``
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
        """Reliability diagrams before and after (see :func:`~logit_processors.calibration_metrics.plot_reliability`)."""
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
        >>> print(report(model, tokenizer, heldout_texts, calibration))                  # doctest: +SKIP
        >>> report(model, tokenizer, heldout_texts, calibration).plot("reliability.png")  # doctest: +SKIP
    """
    temperature = getattr(calibration, "temperature", calibration)
    before, after = evaluate(model, tokenizer, texts, (1.0, temperature), **evaluate_kwargs)
    return CalibrationReport(float(temperature), before, after, n_bins)
