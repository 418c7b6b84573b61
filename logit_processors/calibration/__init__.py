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
position: see :mod:`logit_processors.calibration.fit` (the logits come from
:mod:`logit_processors.runtime.streamed_logits`). The metrics (NLL, ECE with equal-width and
equal-mass bins, top-label Brier) are in :mod:`.metrics`, the reliability diagrams in
:mod:`.diagrams`; :func:`report` (:mod:`.evaluation`) gives them before and after on held-out
text. :mod:`.temperature` holds the processor itself.

Example:
    >>> import os, tempfile
    >>> from logit_processors.calibration import CalibratedTemperature, report
    >>> from logit_processors.models import load_tiny_gpt2
    >>> from logit_processors.models.tiny_gpt2 import corpus
    >>> model, tokenizer = load_tiny_gpt2()
    >>> texts = corpus()
    >>> calibration = CalibratedTemperature.fit(model, tokenizer, texts[:4], progress=False)
    >>> 0.5 < calibration.temperature < 2.0
    True
    >>> path = os.path.join(tempfile.mkdtemp(), "calibration.json")
    >>> calibration.save(path)
    >>> calibration = CalibratedTemperature.load(path, model, tokenizer)   # refuses another model
    >>> held_out = report(model, tokenizer, texts[4:6], calibration)
    >>> held_out.after.nll.mean() <= held_out.before.nll.mean() + 0.05    # T fitted on other text
    tensor(True)
    >>> inputs = tokenizer(["The with statement"], return_tensors="pt")
    >>> out = model.generate(**inputs, logits_processor=[calibration], do_sample=True, top_k=None, max_new_tokens=4)
"""

from .diagrams import plot_reliability
from .evaluation import CalibrationReport, evaluate, report
from .fit import TemperatureFit, fit_temperature, optimal_temperature
from .metrics import Predictions
from .temperature import CalibratedTemperature, calibrate_members, window_length

__all__ = [
    "CalibratedTemperature",
    "CalibrationReport",
    "Predictions",
    "TemperatureFit",
    "calibrate_members",
    "evaluate",
    "fit_temperature",
    "optimal_temperature",
    "plot_reliability",
    "report",
    "window_length",
]
