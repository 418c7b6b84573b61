"""Per-token logit-gap statistics: how sure the model was, token by token.

The gap between two logits is a *margin*: ``z_i - z_j = log(p_i / p_j)`` is the log-odds of one
token against another, and it does not change when every logit is shifted (so raw logits and
beam search's log-probabilities give the same gaps). Thin margins mean the model was torn
between candidates; a chosen token far below the top one, or margins that suddenly collapse or
swell, are signals of uncertainty, of sampling luck, or of manipulation (a prompt injection or an
adversarial suffix pushing the model somewhere it would not go by itself).

For every position this module computes, from the next-token distribution (in float32, on the
scores' device, vectorized over batch and positions, through :mod:`logit_processors.numerics`):

``top_gap``
    ``log p_top1 - log p_top2``: the log-odds between the two leading candidates (the same number
    as the difference of their raw logits). ``+inf`` when only one token is unmasked.
``chosen_gap``
    ``log p_top1 - log p_chosen >= 0``: how far below the model's favourite the actual token was;
    0 when the model's top choice was taken.
``surprisal``
    ``-log p_chosen`` in nats.
``entropy``
    Shannon entropy of the distribution in nats.
``rank``
    Rank of the actual token: the number of tokens with a strictly higher log-probability
    (0 = top; tied tokens share a rank).
``alternatives``
    The ``top_k`` (default 5) most likely tokens with their log-probabilities.

Masked tokens (``-inf``) have probability 0: a chosen token at ``-inf`` has ``surprisal = inf``
and ``chosen_gap = inf`` (it can only happen when the statistics are taken from scores other than
the ones the token was sampled from). A fully masked row has ``top_gap = chosen_gap = nan``,
entropy 0. Columns of a padded LM head (wider than the tokenizer) are just more columns; their
token strings are ``None``.

Two ways to get them, with the same definitions and the same record schema:

* :func:`token_stats` (teacher forcing): one forward pass per batch over given texts or token ids.
  The statistics at token ``t`` describe predicting token ``t`` from tokens ``< t``. The *first*
  token has no prediction: it is included (so a trace lines up with the text) with ``nan``
  statistics, ``rank`` ``None`` and no alternatives.
* :class:`LogitGapMonitor` (during ``generate()``): a processor that leaves the scores untouched
  and records each step on the device; :meth:`LogitGapMonitor.trace` then gives the statistics of
  the *generated* tokens of each returned sequence.

Both return a :class:`Trace`: per sequence the token ids, their strings (each token decoded on its
own) and the statistics, as :meth:`Trace.records`, :meth:`Trace.to_json` / :meth:`Trace.save_json`
and :meth:`Trace.to_pandas`.

The room: :mod:`.stats` (the kernel), :mod:`.trace` (the data model and its JSON),
:mod:`.token_stats` (teacher forcing) and :mod:`.monitor` (:class:`LogitGapMonitor`).

Example:
    >>> from logit_processors.gaps import token_stats
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> trace = token_stats(model, tokenizer, "The with statement")
    >>> record = trace.records()[1]                    # " with", predicted from "The"
    >>> record["token"], record["rank"] >= 0, sorted(record)[:4]
    (' with', True, ['alternatives', 'chosen_gap', 'entropy', 'position'])
"""

from .monitor import LogitGapMonitor
from .stats import DEFAULT_TOP_K, STATISTICS, GapStats, gap_stats
from .token_stats import token_stats
from .trace import JSON_FORMAT, SequenceTrace, Trace

__all__ = [
    "DEFAULT_TOP_K",
    "JSON_FORMAT",
    "STATISTICS",
    "GapStats",
    "LogitGapMonitor",
    "SequenceTrace",
    "Trace",
    "gap_stats",
    "token_stats",
]
