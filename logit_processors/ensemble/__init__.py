"""Ensembling models inside ``generate()``: log-probabilities or log-odds added with weights.

Logits are log-counts, so combining models is adding their (log-)evidence. For models that share a
tokenizer, :class:`LogOddsEnsemble` takes the primary model's scores (what ``generate()`` hands its
processors) and the next-token logits of N member models, run alongside with their own KV caches
(:mod:`logit_processors.runtime.members`), and returns the ensemble's log-probabilities. With
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
``combine="mixture"`` is the linear pool ``p = sum_i w_i p_i / sum_i w_i`` (weights >= 0); with
``adaptive=True`` its weights learn online, per row, from each model's probability of the tokens
generated so far (:mod:`.adaptive`: a Bayes mixture over a weight grid with fixed-share switching,
within ``ln R + ln G`` nats of the best constant grid weight in hindsight).

Members with **another tokenizer** (given in ``tokenizer=[primary's, member's, ...]``) read the
primary's text in their own tokens; their probability of each primary token comes from that
(:mod:`logit_processors.runtime.aligned_members`). :func:`score_text` scores models and their
ensemble on bytes, the unit every tokenizer shares (:mod:`.byte_spans` for the exact span
mixture, :mod:`.generation_score` for the distribution the ensemble generates from).

Guarantees:

* Masks survive: a token that any model with a nonzero weight gives probability 0 (a ``-inf``
  score, e.g. masked by an earlier processor) stays masked, whatever the weight's sign; no NaN
  ever (see :func:`logit_processors.numerics.masked_weighted_sum`).
* Vocabulary safety: with tokenizers, a member either maps tokens to ids identically (combined
  id by id) or is aligned on text (another tokenizer); one that can be neither is refused with a
  ``ValueError`` at construction (:func:`~.combine.tokenizer_relation`). LM heads padded to
  different widths (GPT-2: 50,257 tokens, 50,304 columns) are cut to the tokenizer's range;
  columns beyond it are masked in the output.
  Without tokenizers, the common range is the narrowest model's width.
* The output is log-probabilities (normalized), so beam search ranks hypotheses by the
  ensemble's own sequence likelihood. Scores may be raw logits or log-probs: everything is
  shift-invariant per row.
* Members follow ``input_ids`` (new calls, changed batches, ``num_return_sequences``, beam
  reordering, left padding: see :mod:`logit_processors.runtime.members`); the processor is reusable
  across ``generate()`` calls. Assisted generation is refused with a ``ValueError``.

The room: :mod:`.combine` (the math on score tensors, and the tokenizer check),
:mod:`.with_members` (the base of processors that run other models), :mod:`.log_odds`
(:class:`LogOddsEnsemble`), :mod:`.contrastive` (:class:`ContrastiveDecoding`), :mod:`.adaptive`
(:class:`AdaptiveMixture`: mixture weights learned online), and scoring on bytes:
:mod:`.byte_spans`, :mod:`.generation_score`, :mod:`.score_text`.

Example:
    >>> from logit_processors import LogOddsEnsemble
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> other, other_tokenizer = load_tiny_gpt2(seed=1)   # same tokenizer, other weights
    >>> ensemble = LogOddsEnsemble([other], weights=[0.5, 0.5], tokenizer=[tokenizer, other_tokenizer])
    >>> inputs = tokenizer(["The if statement", "Exceptions"], return_tensors="pt", padding=True)
    >>> out = model.generate(**inputs, logits_processor=[ensemble], do_sample=False, max_new_tokens=12)
    >>> out.shape[0], ensemble.counts["prefill"]       # one prefill of the member, then one token per step
    (2, 1)
"""

from .adaptive import AdaptiveMixture
from .combine import COMBINE_MODES, Combine, check_same_vocabulary, combine_log_probs, tokenizer_relation
from .contrastive import ContrastiveDecoding
from .log_odds import LogOddsEnsemble
from .score_text import score_text
from .with_members import WithMemberModels

__all__ = [
    "COMBINE_MODES",
    "AdaptiveMixture",
    "Combine",
    "ContrastiveDecoding",
    "LogOddsEnsemble",
    "WithMemberModels",
    "check_same_vocabulary",
    "combine_log_probs",
    "score_text",
    "tokenizer_relation",
]
