"""Ensembling models inside ``generate()``: log-probabilities or log-odds added with weights.

Logits are log-counts, so combining models is adding their (log-)evidence. For models that share a
tokenizer, :class:`LogOddsEnsemble` takes the primary model's scores (what ``generate()`` hands its
processors) and the next-token logits of N member models, run alongside with their own KV caches
(:mod:`logit_processors.members`), and returns the ensemble's log-probabilities. With
``combine="logprob"`` this is a weighted product of experts (Hinton, 2002, "Training Products of
Experts by Minimizing Contrastive Divergence"):

    log p(x) = sum_i w_i * log softmax(z_i / T_i)(x) + const

With ``combine="logodds"`` each model's per-token log-odds ``l_i(x) = log p_i(x) - log(1 - p_i(x))``
are added, and with a ``prior`` its log-odds are subtracted ``sum(w) - 1`` times:

    l(x) = sum_i w_i * l_i(x) - (sum_i w_i - 1) * l_prior(x),    p(x) ∝ sigmoid(l(x))

For calibrated forecasters that are conditionally independent given the outcome, this is Bayes'
rule: each multiplies the odds of "the next token is x" by its likelihood ratio, and the prior
odds, contained in every forecaster's odds, are counted once (Bordley, 1982, "A Multiplicative
Formula for Aggregating Probability Assessments"; Genest & Zidek, 1986, "Combining Probability
Distributions"). The per-token probabilities ``sigmoid(l(x))`` are then renormalized over the
vocabulary, since V one-vs-rest combinations need not sum to 1. The same prior correction exists
in ``logprob`` mode (``p ∝ prod p_i^w_i / prior^(sum w - 1)``, the categorical form). Calibrate
first (:mod:`logit_processors.calibration`: a fitted temperature per model, given as
``temperatures``): adding log-odds assumes each model's confidence means what it says.
Negative weights subtract a model (DExperts, Liu et al., 2021; proxy-tuning, Liu et al., 2024);
:class:`ContrastiveDecoding` is the expert-minus-amateur special case with a plausibility cut.

Guarantees:

* Masks survive: a token that any model with a nonzero weight gives probability 0 (a ``-inf``
  score, e.g. masked by an earlier processor) stays masked, whatever the weight's sign; no NaN
  ever (see :func:`logit_processors.numerics.masked_weighted_sum`).
* Vocabulary safety: with tokenizers, the models must map tokens to ids identically (else a
  ``ValueError`` at construction). LM heads padded to different widths (GPT-2: 50,257 tokens,
  50,304 columns) are cut to the tokenizer's range; columns beyond it are masked in the output.
  Without tokenizers, the common range is the narrowest model's width.
* The output is log-probabilities (normalized), so beam search ranks hypotheses by the
  ensemble's own sequence likelihood. Scores may be raw logits or log-probs: everything is
  shift-invariant per row.
* Members follow ``input_ids`` (new calls, changed batches, ``num_return_sequences``, beam
  reordering, left padding: see :mod:`logit_processors.members`); the processor is reusable
  across ``generate()`` calls. Assisted generation is refused with a ``ValueError``.

Example:
    >>> from logit_processors import LogOddsEnsemble
    >>> from logit_processors.testing import load_tiny_gpt2                       # doctest: +SKIP
    >>> model, tokenizer = load_tiny_gpt2()                                       # doctest: +SKIP
    >>> other, other_tokenizer = load_tiny_gpt2(seed=1)   # same tokenizer, other weights  # doctest: +SKIP
    >>> ensemble = LogOddsEnsemble([other], weights=[0.5, 0.5], tokenizer=[tokenizer, other_tokenizer])  # doctest: +SKIP
    >>> inputs = tokenizer(["The if statement", "Exceptions"], return_tensors="pt", padding=True)  # doctest: +SKIP
    >>> out = model.generate(**inputs, logits_processor=[ensemble], do_sample=False, max_new_tokens=12)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal

import torch

from . import numerics
from .core import DeviceCache, Processor, probability
from .members import CachedMembers, check_causal_lm

Combine = Literal["logprob", "logodds"]
COMBINE_MODES: tuple[str, ...] = ("logprob", "logodds")
NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# The math, on score tensors


def combine_log_probs(
    scores: Sequence[torch.Tensor],
    weights: Sequence[float],
    combine: Combine = "logprob",
    temperatures: Sequence[float] | None = None,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ensemble's float32 log-probabilities ``[B, V]`` from each model's scores ``[B, V]``.

    ``scores[i]`` are model i's logits (or log-probs) over the same V tokens, divided by
    ``temperatures[i]`` (default 1); ``prior`` (``[V]`` or ``[B, V]`` scores, optional) is
    subtracted ``sum(weights) - 1`` times. See the module docstring for the two modes.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0, -float("inf")]])
        >>> torch.allclose(combine_log_probs([z, z], [0.5, 0.5]), torch.log_softmax(z, -1))
        True
        >>> p = combine_log_probs([z, torch.tensor([[0.0, 3.0, 1.0]])], [1.0, 1.0]).exp()
        >>> [round(x, 3) for x in p[0].tolist()]   # e^(2+0), e^(0+3), masked: normalized
        [0.269, 0.731, 0.0]
    """
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
    if len(scores) != len(weights):
        raise ValueError(f"got {len(scores)} score tensors but {len(weights)} weights; they must match")
    temperatures = [1.0] * len(scores) if temperatures is None else list(temperatures)
    if len(temperatures) != len(scores):
        raise ValueError(f"got {len(scores)} score tensors but {len(temperatures)} temperatures; they must match")
    if all(w == 0 for w in weights):
        raise ValueError(f"at least one weight must be nonzero; got {list(weights)!r}")
    evidence = numerics.log_softmax if combine == "logprob" else numerics.log_odds_of_scores
    terms, used = [], []
    for s, w, t in zip(scores, weights, temperatures, strict=True):
        if w != 0:  # skipped entirely: a zero weight means "not in the ensemble"
            terms.append(evidence(numerics.as_float32(s) / t if t != 1 else s))
            used.append(float(w))
    prior_weight = 1.0 - math.fsum(weights)
    if prior is not None and prior_weight != 0:
        terms.append(evidence(prior).expand_as(terms[0]))
        used.append(prior_weight)
    total = numerics.masked_weighted_sum(terms, used)
    if combine == "logodds":
        total = torch.nn.functional.logsigmoid(total)  # each token's combined probability, in log space
    return numerics.log_softmax(total)


# --------------------------------------------------------------------------------------------
# Argument checks


def temperature_value(name: str, value: object) -> float:
    """A temperature as a float: a positive number, or anything with a ``.temperature`` attribute
    (e.g. a fitted :class:`logit_processors.calibration.CalibratedTemperature`)."""
    raw = getattr(value, "temperature", value)
    if isinstance(raw, torch.Tensor) and raw.numel() == 1:
        raw = raw.item()
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real) or not math.isfinite(raw) or raw <= 0:
        raise ValueError(
            f"{name} must be a positive finite number or an object with a .temperature attribute "
            f"(e.g. a fitted CalibratedTemperature); got {value!r}"
        )
    return float(raw)


def check_same_vocabulary(tokenizers: Sequence[object], names: Sequence[str]) -> None:
    """ValueError unless every tokenizer maps tokens to ids identically (vocabulary and special tokens).

    Which token is EOS or PAD may differ (e.g. a base and an instruct checkpoint of one family):
    that is generation policy, set by the primary's generation config, not the id mapping.
    """
    reference, reference_name = tokenizers[0], names[0]
    vocab = reference.get_vocab()
    special = _special_tokens(reference)
    for tokenizer, name in zip(tokenizers[1:], names[1:], strict=True):
        other = tokenizer.get_vocab()
        if other != vocab:
            differ = sorted({token for token, i in vocab.items() ^ other.items()}, key=lambda t: (vocab.get(t, 1 << 62), t))
            shown = ", ".join(f"{t!r}: {vocab.get(t)} vs {other.get(t)}" for t in differ[:6])
            raise ValueError(
                f"{name}'s tokenizer does not map tokens to the same ids as {reference_name}'s ({len(other)} vs "
                f"{len(vocab)} tokens; {len(differ)} differ, as {reference_name}'s id vs {name}'s: {shown}"
                f"{', ...' if len(differ) > 6 else ''}). Ensembled models must share one tokenizer"
            )
        other_special = _special_tokens(tokenizer)
        if other_special != special:
            differ = sorted(special.items() ^ other_special.items())[:6]
            raise ValueError(
                f"{name}'s tokenizer has different special tokens than {reference_name}'s "
                f"(id, (token, special) in one but not the other: {differ}); ensembled models must share one tokenizer"
            )


def _special_tokens(tokenizer) -> dict[int, tuple[str, bool]]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i): (str(t), bool(getattr(t, "special", True))) for i, t in decoder.items()}


def _head_width(model) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


# --------------------------------------------------------------------------------------------
# Processors


class _WithMembers(Processor):
    """Shared machinery: tokenizer checks, the common token range, the output layout, and the
    models that run alongside ``generate()`` (:class:`CachedMembers`).

    ``models``/``names``: every model the processor was given (checked); ``run``: the indices of
    those that take part, and so are run at each step.
    """

    def __init__(self, models: list, names: list[str], run: list[int], tokenizer, pad_token_id: int | None):
        for name, model in zip(names, models, strict=True):
            check_causal_lm(name, model)
        tokenizers = self._tokenizers(tokenizer, len(models) + 1)
        given = [(t, n) for t, n in zip(tokenizers, ["the primary model", *names], strict=True) if t is not None]
        if len(given) > 1:
            check_same_vocabulary([t for t, _ in given], [n for _, n in given])
        #: Number of real tokens (LM-head columns beyond are masked); None: the narrowest width, per call.
        self.n_tokens = len(given[0][0]) if given else None
        if self.n_tokens is not None:
            for name, model in zip(names, models, strict=True):
                width = _head_width(model)
                if width is not None and width < self.n_tokens:
                    raise ValueError(
                        f"{name}'s LM head has {width} columns but the tokenizer has {self.n_tokens} tokens; "
                        "its ids cannot cover the shared vocabulary"
                    )
        if pad_token_id is None and given:
            pad_token_id = getattr(given[0][0], "pad_token_id", None)
        if pad_token_id is None and models:
            pad_token_id = getattr(getattr(models[0], "generation_config", None), "pad_token_id", None)
        self.pad_token_id = pad_token_id
        self._members = CachedMembers([models[i] for i in run], pad_token_id=pad_token_id)

    @staticmethod
    def _tokenizers(tokenizer, count: int) -> list:
        """One tokenizer (the shared one: the primary's) or a list of ``count``, as a list of ``count``."""
        if tokenizer is None or hasattr(tokenizer, "get_vocab"):
            return [tokenizer] + [None] * (count - 1)
        if isinstance(tokenizer, (str, bytes)) or not isinstance(tokenizer, Sequence):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer or a list of them; got {type(tokenizer).__name__}")
        tokenizers = list(tokenizer)
        if len(tokenizers) != count:
            raise ValueError(
                f"tokenizer must be one tokenizer or a list of {count} (the primary's first, then one per "
                f"model, None where unknown); got a list of {len(tokenizers)}"
            )
        for i, t in enumerate(tokenizers):
            if t is not None and not hasattr(t, "get_vocab"):
                raise TypeError(f"tokenizer #{i} must be a Hugging Face tokenizer or None; got {type(t).__name__}")
        return tokenizers

    def reset(self) -> None:
        """Free the member models' caches; the next call starts from ``input_ids`` alone."""
        self._members.reset()

    @property
    def counts(self) -> dict[str, int]:
        """How the member models' steps were served: ``prefill`` (whole sequences run), ``continue``
        (one new token per row), ``reorder`` (continuations that followed beams to new rows)."""
        return dict(self._members.counts)

    def set_attention_mask(self, attention_mask: torch.Tensor):
        """The prompt's attention mask for the next ``generate()`` call (``[prompts, prompt length]``),
        used instead of inferring left padding from ``pad_token_id``. Returns ``self``, so that
        ``logits_processor=[ensemble.set_attention_mask(inputs["attention_mask"])]`` is one step.
        Needed only when a prompt may begin with the pad token itself (e.g. GPT-2's BOS = EOS = pad)."""
        self._members.set_attention_mask(attention_mask)
        return self

    def _member_logits(self, input_ids: torch.Tensor, scores: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """The running models' logits cut to the common token range, and that range's width."""
        logits = self._members.next_token_logits(input_ids) if self._members.models else []
        widths = [scores.shape[-1], *(x.shape[-1] for x in logits)]
        if self.n_tokens is None:
            width = min(widths)
        elif min(widths) < self.n_tokens:
            raise ValueError(
                f"scores have {widths[0]} columns and the models' logits {widths[1:]}, but the tokenizer has "
                f"{self.n_tokens} tokens; every model must cover the shared vocabulary"
            )
        else:
            width = self.n_tokens
        return [x[:, :width] for x in logits], width

    @staticmethod
    def _finish(name: str, scores: torch.Tensor, combined: torch.Tensor, width: int) -> torch.Tensor:
        """``combined [B, width]`` in the layout and dtype of ``scores [B, V]`` (columns >= width
        masked); a ValueError for rows that this processor left with nothing to sample."""
        emptied = numerics.fully_masked_rows(combined) & ~numerics.fully_masked_rows(scores[:, :width])
        if bool(emptied.any()):
            rows = emptied.nonzero().flatten().tolist()
            raise ValueError(
                f"{name} left no token in row(s) {rows[:20]}: every token the primary allows has probability 0 "
                "under another model with a nonzero weight"
            )
        if width == scores.shape[-1]:
            return combined.to(scores.dtype)
        out = torch.full_like(scores, NEG_INF)
        out[:, :width] = combined
        return out


class LogOddsEnsemble(_WithMembers):
    """Combine the primary model's scores with N member models: weighted log-probs or log-odds.

    Args:
        members: a causal LM or a list of them (any Hugging Face decoder-only LM sharing the
            primary's tokenizer). Each runs on the same token histories with its own KV cache.
        weights: N + 1 finite numbers, the primary's first. Negative weights subtract a model;
            a member with weight 0 is left out (not even run).
        combine: ``"logprob"`` (weighted product of experts) or ``"logodds"`` (per-token log-odds
            added, then renormalized); see the module docstring for the math.
        prior: ``None``, a causal LM, or a fixed distribution (a ``[V]`` tensor of probabilities,
            renormalized over the shared tokens), subtracted ``sum(weights) - 1`` times.
        temperatures: ``None`` or N + 1 temperatures (numbers, or fitted calibration objects with
            a ``.temperature``), dividing each model's logits before combining.
        tokenizer: one tokenizer (the shared one) or a list of N + 1 (primary first; ``None``
            where unknown), checked to map tokens identically. Sets the token range (padded LM
            head columns beyond it are masked) and, by default, ``pad_token_id``.
        pad_token_id: token whose leading run in a prompt is left padding (default: the
            tokenizer's, else the first member's generation config); see :meth:`set_attention_mask`.

    Output: the ensemble's log-probabilities, in the dtype of the scores (computed in float32).

    Example:
        >>> from logit_processors import LogOddsEnsemble
        >>> from logit_processors.testing import load_tiny_gpt2                  # doctest: +SKIP
        >>> primary, tokenizer = load_tiny_gpt2()                                # doctest: +SKIP
        >>> member, _ = load_tiny_gpt2(seed=1)                                   # doctest: +SKIP
        >>> ensemble = LogOddsEnsemble(member, weights=[0.7, 0.3], tokenizer=tokenizer)  # doctest: +SKIP
        >>> inputs = tokenizer(["The for statement"], return_tensors="pt")      # doctest: +SKIP
        >>> out = primary.generate(**inputs, logits_processor=[ensemble], num_beams=4,
        ...                        do_sample=False, max_new_tokens=16)          # doctest: +SKIP
    """

    def __init__(
        self,
        members,
        weights: Sequence[float],
        combine: Combine = "logprob",
        prior=None,
        temperatures: Sequence[object] | None = None,
        tokenizer=None,
        *,
        pad_token_id: int | None = None,
    ):
        members = [members] if isinstance(members, torch.nn.Module) else list(members)
        if not members:
            raise ValueError("members must contain at least one model")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
        self.combine = combine
        self.weights = _weights(weights, len(members))
        self.temperatures = _temperatures(temperatures, len(members))
        self._cache = DeviceCache()
        models, names = list(members), [f"member #{i}" for i in range(len(members))]
        run = [i for i, w in enumerate(self.weights[1:]) if w != 0]  # weight 0: left out
        self._prior_log_probs = None
        self._prior_is_model = isinstance(prior, torch.nn.Module)
        if self._prior_is_model:
            models.append(prior)
            names.append("the prior model")
            if math.fsum(self.weights) != 1:  # else it would be subtracted zero times
                run.append(len(members))
        elif prior is not None:
            self._prior_log_probs = _prior_log_probs(prior)
        self._prior_runs = self._prior_is_model and math.fsum(self.weights) != 1
        # The sources combined at each step: the primary, then the members that run.
        self._used = [0, *(i + 1 for i in run if i < len(members))]
        super().__init__(models, names, run, tokenizer, pad_token_id)

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"members": len(self.weights) - 1, "weights": self.weights, "combine": self.combine}
        if any(t != 1 for t in self.temperatures):
            fields["temperatures"] = self.temperatures
        if self._prior_is_model or self._prior_log_probs is not None:
            fields["prior"] = "model" if self._prior_is_model else "distribution"
        return fields

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        logits, width = self._member_logits(input_ids, scores)
        prior = logits.pop() if self._prior_runs else self._fixed_prior(width, scores.device)
        combined = combine_log_probs(
            [scores[:, :width], *logits],
            [self.weights[i] for i in self._used],
            self.combine,
            [self.temperatures[i] for i in self._used],
            prior=prior,
        )
        return self._finish(type(self).__name__, scores, combined, width)

    def _fixed_prior(self, width: int, device: torch.device) -> torch.Tensor | None:
        if self._prior_log_probs is None:
            return None
        if self._prior_log_probs.shape[0] < width:
            raise ValueError(f"prior has {self._prior_log_probs.shape[0]} entries but the models share {width} tokens")
        return self._cache.get(device, torch.float32, ("prior", width), lambda: self._prior_log_probs[:width])


def _one_per_model(name: str, values, n_members: int) -> list:
    """``values`` as a list with one entry per model (the primary's first), else a ValueError naming ``name``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of {n_members + 1} entries (the primary's first); got {values!r}")
    if len(values) != n_members + 1:
        raise ValueError(
            f"{name} must have {n_members + 1} entries (the primary's first, then one per member); "
            f"got {len(values)}: {list(values)!r}"
        )
    return list(values)


def _weights(weights, n_members: int) -> list[float]:
    weights = _one_per_model("weights", weights, n_members)
    if any(isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite numbers; got {weights!r}")
    if all(w == 0 for w in weights):
        raise ValueError(f"at least one weight must be nonzero; got {weights!r}")
    return [float(w) for w in weights]


def _temperatures(temperatures, n_members: int) -> list[float]:
    if temperatures is None:
        return [1.0] * (n_members + 1)
    temperatures = _one_per_model("temperatures", temperatures, n_members)
    return [temperature_value(f"temperatures[{i}]", t) for i, t in enumerate(temperatures)]


def _prior_log_probs(prior: object) -> torch.Tensor:
    if not isinstance(prior, torch.Tensor) or prior.dim() != 1 or not prior.is_floating_point():
        raise ValueError(
            "prior must be None, a causal LM, or a [V] float tensor of probabilities; got "
            + (f"a tensor of shape {tuple(prior.shape)} and dtype {prior.dtype}" if isinstance(prior, torch.Tensor)
               else type(prior).__name__)
        )
    p = prior.detach().double().cpu()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise ValueError("prior must hold finite, non-negative probabilities with a positive sum")
    return p.log()  # log 0 = -inf: a token the prior rules out stays masked


class ContrastiveDecoding(_WithMembers):
    """Expert minus amateur: ``log p_expert - alpha * log p_amateur`` over the plausible tokens.

    Li et al. (2023), "Contrastive Decoding: Open-ended Text Generation as Optimization" (ACL;
    arXiv 2022): where a large *expert* and a small *amateur* agree, the token is generic (the
    amateur's favourite failure modes: repetition, bland continuations); where the expert is much
    surer than the amateur, it is the expert's knowledge. The score rewards the difference,
    restricted to the *plausible* head ``{x : p_expert(x) >= plausibility * max p_expert}`` (the
    paper's alpha; others get ``-inf``), so that tokens unlikely for both cannot win on a ratio
    of two tiny numbers.

    The primary model is the expert (its scores arrive through ``generate()``); ``amateur`` is
    run alongside with its own KV cache, like :class:`LogOddsEnsemble`'s members. ``alpha``
    weighs the amateur (1 in the paper; O'Brien & Lewis, 2023, tune it), and
    ``amateur_temperature`` softens or sharpens it first (the paper uses 0.5 to 1.5). The output
    is the contrastive score itself, not renormalized: beam search then maximizes the paper's
    objective, the sum of the token scores. Greedy and sampling are unaffected by the shift.

    Example:
        >>> from logit_processors import ContrastiveDecoding
        >>> from logit_processors.models import load                              # doctest: +SKIP
        >>> expert, tokenizer = load("smollm2")                                    # doctest: +SKIP
        >>> amateur, _ = load("path/to/small-model-with-the-same-tokenizer")       # doctest: +SKIP
        >>> cd = ContrastiveDecoding(amateur, alpha=1.0, plausibility=0.1, tokenizer=tokenizer)  # doctest: +SKIP
        >>> out = expert.generate(**inputs, logits_processor=[cd], do_sample=False, max_new_tokens=64)  # doctest: +SKIP
    """

    def __init__(
        self,
        amateur,
        alpha: float = 1.0,
        plausibility: float = 0.1,
        *,
        amateur_temperature: object = 1.0,
        tokenizer=None,
        pad_token_id: int | None = None,
    ):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0 (the amateur's weight); got {alpha!r}")
        self.alpha = float(alpha)
        self.plausibility = probability("plausibility", plausibility)
        self.amateur_temperature = temperature_value("amateur_temperature", amateur_temperature)
        self._log_plausibility = math.log(self.plausibility) if self.plausibility > 0 else NEG_INF
        super().__init__([amateur], ["the amateur"], [0], tokenizer, pad_token_id)

    def _repr_fields(self) -> dict[str, object]:
        return {"alpha": self.alpha, "plausibility": self.plausibility, "amateur_temperature": self.amateur_temperature}

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        [amateur], width = self._member_logits(input_ids, scores)
        expert = numerics.log_softmax(scores[:, :width])
        amateur = numerics.log_softmax(numerics.as_float32(amateur) / self.amateur_temperature)
        score = numerics.masked_weighted_sum([expert, amateur], [1.0, -self.alpha])
        implausible = expert < expert.amax(dim=-1, keepdim=True) + self._log_plausibility
        return self._finish(type(self).__name__, scores, score.masked_fill_(implausible, NEG_INF), width)
