"""``CalibratedTemperature``: a fitted temperature that remembers the model it was fitted on."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from ..models.identity import check_identity, model_identity
from ..processors.temperature import Temperature
from ..runtime.model_inputs import context_length
from ..runtime.streamed_logits import DEFAULT_MAX_LENGTH, TeacherForcedLogits, text_windows
from ..validate import NanPolicy, positive_int
from .fit import fit_temperature, optimal_temperature
from .metrics import Predictions

JSON_FORMAT = "logit_processors.calibration.CalibratedTemperature"
JSON_VERSION = 1


class CalibratedTemperature(Temperature):
    """A fitted temperature: a :class:`~logit_processors.Temperature` that remembers its model.

    Build it with :meth:`fit` (a model and texts), :meth:`fit_logits` (in-memory logits and
    labels, e.g. a classifier's) or :meth:`load`. It divides the scores by ``.temperature``
    like ``Temperature(T)``, and it refuses a model it was not fitted on:

    * :meth:`load` with ``model`` (and ``tokenizer``) compares the saved identity (model type,
      vocabulary size, config hash, tokenizer size, embedding and head weight norms; see
      :mod:`logit_processors.models.identity`) and raises a ``ValueError`` naming what differs;
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
                 fit: dict[str, Any] | None = None, on_nan: NanPolicy = "raise"):
        if isinstance(temperature, torch.Tensor):
            raise TypeError("CalibratedTemperature takes one float temperature; use Temperature for per-row tensors")
        super().__init__(temperature, on_nan=on_nan)
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
        if isinstance(labels, torch.Tensor) and labels.numel() == 0:
            raise ValueError("fit_logits needs at least one (logits, label) pair; got none")
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
        if "temperature" not in document:
            raise ValueError(f"this {JSON_FORMAT} document has no 'temperature' field")
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
        >>> from logit_processors import LogOddsEnsemble
        >>> from logit_processors.models import load_tiny_gpt2
        >>> from logit_processors.models.tiny_gpt2 import corpus
        >>> model, tokenizer = load_tiny_gpt2()
        >>> other, _ = load_tiny_gpt2(seed=1)
        >>> calibrations = calibrate_members([model, other], tokenizer, corpus()[:2], progress=False)
        >>> ensemble = LogOddsEnsemble([other], [0.5, 0.5], combine="logodds", temperatures=calibrations)
        >>> len(ensemble.temperatures)
        2
    """
    tokenizers = list(tokenizer) if isinstance(tokenizer, (list, tuple)) else [tokenizer] * len(models)
    if len(tokenizers) != len(models):
        raise ValueError(f"got {len(models)} models but {len(tokenizers)} tokenizers; give one, or one per model")
    return [CalibratedTemperature.fit(model, tok, texts, **fit_kwargs) for model, tok in zip(models, tokenizers, strict=True)]
