"""``score_text``: each model's and the ensemble's bits per byte on a text, across tokenizers.

Bits per byte (``-log2 p(text) / bytes``) is the one unit every tokenizer shares. What is exact
and what is approximated:

* **members**: exact for each model's canonical tokenization of the text, after the model's
  own start token (``<bos>``; for a tokenizer without one, its BOS or EOS token). That is a lower
  bound on the probability of the text (the marginal over every tokenization spelling it; Phan et
  al., 2024, "Exact Byte-Level Probabilities from Tokenized Language Models"), close to it for
  models trained on canonical tokenizations.
* ``combine="mixture"`` (the default): the linear mixture per byte span, spans ending where every
  model's tokenization ends a token (:mod:`.byte_spans`): ``log sum_i w_i p_i(span | text before)``.
  Each span's probability is exact (canonical tokens); where spans end is read off the whole
  text's tokenizations, so this scores the text rather than predicting it byte by byte (see
  :mod:`.byte_spans`).
* ``combine="logprob"`` / ``"logodds"``: a product of experts needs its normalizer, which a span
  (a set of texts) does not have, and the span-level geometric pool ``prod_i p_i^{w_i}`` (weights
  summing to 1) multiplies out to the weighted mean of the members' bits, never better than the
  better member. So these are scored the way :class:`~logit_processors.LogOddsEnsemble`
  generates: on the first model's vocabulary, normalized at every step, teacher-forced on its
  tokenization (:mod:`.generation_score`); two models only.

``generation=True`` also scores that generation-mode distribution for the mixture (first model the
primary). ``adaptive=True`` (mixtures) adds ``"adaptive"``: the mixture whose weights learn online
from the spans (or, in generation mode, tokens) scored so far (:mod:`.adaptive`), each document
from a prior: fitted on ``fit_texts`` if given, else centred on ``weights`` (half uniform either
way), or an :class:`~.adaptive.AdaptiveMixture` passed as ``adaptive``. Weights are given, or
fitted on ``fit_texts`` (EM for mixtures, a grid of member weights for products);
``temperatures`` (numbers or fitted :class:`~logit_processors.calibration.CalibratedTemperature`)
divide each model's logits first.

Example:
    >>> from logit_processors.models import load_tiny_gemma, load_tiny_gpt2
    >>> gpt2, gpt2_tokenizer = load_tiny_gpt2()
    >>> gemma, gemma_tokenizer = load_tiny_gemma()
    >>> result = score_text([gpt2, gemma], [gpt2_tokenizer, gemma_tokenizer], "The if statement is",
    ...                     fit_texts=["Exceptions are raised when"], names=["gpt2", "gemma"])
    >>> sorted(result), result["bytes"]
    (['bytes', 'combine', 'ensemble', 'fit', 'members', 'spans', 'temperatures', 'weights'], 19)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..runtime.text_codec import TextCodec
from ..validate import finite_floats
from .adaptive import AdaptiveMixture, check_adaptive
from .byte_spans import LOG2, fit_mixture_weights, score_spans
from .combine import COMBINE_MODES, check_mixture, temperature_value
from .generation_score import generation_scores


def score_text(models: Sequence, tokenizers: Sequence, texts: str | Sequence[str], *,
               fit_texts: str | Sequence[str] | None = None, weights: Sequence[float] | None = None,
               combine: str = "mixture", temperatures: Sequence[object] | None = None, generation: bool = False,
               names: Sequence[str] | None = None, adaptive: bool | AdaptiveMixture = False) -> dict:
    """Bits per byte of every model and of their ensemble on ``texts`` (a string, or documents each
    scored from its own start token); see the module docstring. Returns a JSON-able dict:
    ``{"bytes", "members": {name: bits per byte}, "ensemble", "weights", "combine", "temperatures",
    "spans"}`` (and ``"fit"``, ``"generation"``, ``"adaptive"`` when asked)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    fit_texts = [fit_texts] if isinstance(fit_texts, str) else (list(fit_texts) if fit_texts is not None else None)
    names = list(names) if names is not None else [f"model #{k}" for k in range(len(models))]
    if not models or len(models) != len(tokenizers) or len(names) != len(models):
        raise ValueError(f"give one tokenizer and one name per model; got {len(models)} models, {len(tokenizers)} "
                         f"tokenizers and {len(names)} names")
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
    check_adaptive(adaptive, combine, len(models))
    if weights is None and fit_texts is None:
        raise ValueError("give the ensemble's weights, or fit_texts to fit them on (never the scored text itself)")
    if weights is not None:
        weights = finite_floats("weights", weights)
        if len(weights) != len(models):
            raise ValueError(f"weights must have one entry per model ({len(models)}); got {weights}")
        if combine == "mixture":
            check_mixture(weights)
    given = weights
    temps = [temperature_value(f"temperatures[{k}]", t) for k, t in enumerate(temperatures or [1.0] * len(models))]
    codecs = [TextCodec.of(t, f"{n}'s tokenizer") for t, n in zip(tokenizers, names, strict=True)]
    scores = score_spans(models, codecs, texts, temps)
    members = scores.member_bits_per_byte()
    result = {"bytes": scores.n_bytes, "members": dict(zip(names, members, strict=True)), "combine": combine,
              "temperatures": temps, "spans": int(scores.matrix().shape[0])}
    if fit_texts is not None:
        result["fit"] = {"documents": len(fit_texts), "bytes": sum(len(t.encode("utf-8")) for t in fit_texts)}
    if combine == "mixture":
        needs_fit = _fits(fit_texts, weights, adaptive)
        fit_matrix = score_spans(models, codecs, fit_texts, temps).matrix() if needs_fit else None
        if weights is None:
            weights = fit_mixture_weights(fit_matrix)
        result.update(ensemble=scores.mixture_bits_per_byte(weights), weights=_normalized(weights))
        if adaptive is not False:
            mixture = _adaptive_mixture(adaptive, fit_matrix, weights)
            result["adaptive"] = _adaptive_scores(mixture, scores.per_document(), scores.n_bytes)
    else:
        result.update(_product(models, tokenizers, texts, fit_texts, weights, combine, temps))
    if generation:
        result["generation"] = _generation_mixture(models, tokenizers, texts, fit_texts,
                                                   given if combine == "mixture" else None, temps, adaptive)
    return result


def _normalized(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


def _product(models, tokenizers, texts, fit_texts, weights, combine, temps) -> dict:
    if len(models) != 2:
        raise ValueError(f"combine={combine!r} is scored on the first model's vocabulary, with one member; "
                         f"got {len(models)} models (use combine='mixture' for more)")
    args = (models[0], tokenizers[0], [models[1]], [tokenizers[1]])
    grid = None if weights is None else [tuple(weights)]
    if weights is None:  # the member weight (the primary's is 1) that does best on the fit text
        fit = generation_scores(*args, fit_texts, temperatures=temps, product=combine)
        bits = fit.product_bits_per_byte()
        grid = [fit.weights[min(range(len(bits)), key=bits.__getitem__)]]
    held = generation_scores(*args, texts, temperatures=temps, product=combine, product_weights=grid)
    return {"ensemble": held.product_bits_per_byte()[0], "weights": list(grid[0]),
            "note": "normalized at every step over the first model's vocabulary (generation mode)"}


def _generation_mixture(models, tokenizers, texts, fit_texts, weights, temps, adaptive=False) -> dict:
    args = (models[0], tokenizers[0], list(models[1:]), list(tokenizers[1:]))
    held = generation_scores(*args, texts, temperatures=temps, product=None)
    needs_fit = _fits(fit_texts, weights, adaptive)
    fit = generation_scores(*args, fit_texts, temperatures=temps, product=None) if needs_fit else None
    if weights is None:
        weights = fit.fit_mixture()
    out = {"ensemble": held.bits_per_byte(weights), "weights": _normalized(weights),
           "members_on_primary_tokens": [held.bits_per_byte([float(k == j) for k in range(len(models))])
                                         for j in range(len(models))]}
    if adaptive is not False:
        mixture = _adaptive_mixture(adaptive, fit.targets if fit is not None else None, weights)
        out["adaptive"] = _adaptive_scores(mixture, held.per_document(), held.n_bytes)
    return out


def _fits(fit_texts, weights, adaptive) -> bool:
    """Whether anything is fitted on the fit text (the weights, or the adaptive mixture's prior):
    only then are the models run over it."""
    return fit_texts is not None and (weights is None or adaptive is True)


def _adaptive_mixture(adaptive, fit_matrix, weights) -> AdaptiveMixture:
    """The given mixture, else one whose prior is fitted on the fit text, else centred on ``weights``."""
    if isinstance(adaptive, AdaptiveMixture):
        return adaptive
    return AdaptiveMixture.fitted(fit_matrix) if fit_matrix is not None else AdaptiveMixture.centered_at(weights)


def _adaptive_scores(mixture: AdaptiveMixture, documents, n_bytes: int) -> dict:
    nats, final = mixture.score_documents(documents)
    prior = "uniform" if mixture.prior is None else "half uniform, half fitted or given"
    return {"ensemble": nats / LOG2 / n_bytes if n_bytes else float("nan"), "final_weights": final,
            "prior": prior, "grid": mixture.n_grid, "rates": mixture.rates,
            "regret_bound_nats_per_document": mixture.regret_bound(), "restart": "per document"}
