"""Prompt anomaly detection from the model's own logits and hidden state: four channels, one threshold.

What a detector must survive is the traffic a model serves: code, pasted documents (Markdown,
logs, JSON), many languages and scripts, multi-turn chats. A detector that standardizes raw
surprisal against short English questions learns "unlike a short English question": a Python
function, a JSON file or a request in Russian is surprising token after token, and it flags them
(the first version of this detector flagged 69% of held-out code requests, 92% of pasted
documents and 20% of non-English requests). So:

**Token channel (gibberish suffixes).** Every statistic is taken *relative to what the model
itself expected at that position*, so that it does not depend on how predictable the content
is (:meth:`~logit_processors.detection.prompt_stats.PromptStats.features`):

* ``standardized_surprisal = (surprisal - entropy) / sqrt(varentropy + 0.25)``, the token's
  z-score under the model's own next-token distribution: a Russian word after Russian text has
  high surprisal *and* high entropy, so a small z; an optimized suffix token has a surprisal far
  above the entropy of its position;
* ``pit_score``, the normal score of the probability integral transform (the model's mass on
  more likely tokens, plus half the token's own): N(0, 1) for text the model predicts as well as
  it believes it does, whatever its language or domain; near +4 for a token ranked far down.

Each is standardized against a benign baseline *fitted on varied benign traffic* (median and MAD
per position bucket of the user's text, :meth:`Detector.fit`), clipped to ``[-clip, clip]`` so
that one wild token cannot decide alone, averaged into one score ``x_t`` per token and
standardized again (benign mean 0, sd 1). A one-sided CUSUM ``S_t = max(0, S_{t-1} + x_t - k)``
(Page 1954) then accumulates runs of anomalous tokens: the channel's score is ``max_t S_t``,
the largest sum of ``x_t - k`` over any contiguous span, and that span (where the CUSUM last
left 0, up to its peak) is the suspicious span (:func:`localize`). The drift ``k = 1`` ignores
mild shifts: with invariant features a long benign document has no sustained shift to
accumulate, while a gibberish suffix shifts ``x_t`` by 3-4 standard deviations.

**Windows channel (improbable text in absolute terms).** The token channel's invariance has a
price: a token is judged against the entropy of its position, and an attacker who knows that can
pick suffix tokens where the model is lost anyway (after a few odd tokens its entropy is high), so
that each is unsurprising *relative to* the model's confusion while the stretch as a whole is
text no one writes. The windowed mean surprisal of the user's tokens (the worst window of
``window = 10`` tokens: the filter of Jain et al. 2023, with their window) sees that: it measures
improbability in absolute terms. On its own it is the filter that flags pasted documents and
other languages; here its benign scale and threshold come from the same varied benign traffic
as the other channels, so its 1%-tail sits above what documents and other scripts score, and it
only decides for a stretch more improbable than any of those.

**Repeats channel (repetition).** Both channels above are blind to a suffix that repeats one
token (``! ! ! ! ! ! ! ! ! ! ! ! ! hashlib ! !``, GCG's own starting string, or what a search
for low perplexity converges to): once a token has repeated a few times the model predicts the
next repeat (induction), so every token is unsurprising, relative to the entropy and in absolute
terms. The channel's score is the longest run of one token repeated back to back in the user's
text. Runs of a digit do not count: a tokenizer that writes numbers digit by digit (SmolLM2's)
makes ``1000000`` a run of six ``0``, and in the benign fit traffic every run longer than two
tokens is a number (up to 9, in pasted documents); no other token repeats three times in a row
there, while the missed GCG suffix repeats `` !`` 13 times and 7 of the 8 suffixes searched for
low perplexity 6-14 times. It counts the tokens beyond the run length that 99% of benign prompts
reach (:func:`repeat_units`), so benign prompts sit at or below 0 on it.

**Probe channel (fluent attacks).** An appended "Ignore all previous instructions ..." or a
"developer mode" jailbreak is fluent English: no token statistic separates it from benign
traffic. The model's hidden state at the end of the prompt does: a logistic probe
(:class:`~logit_processors.detection.probe.LinearProbe`) on one middle layer, fitted on attack
prompts (the ``dev`` rows of the bundled fluent and jailbreak sets: instructions and templates
disjoint from the ``test`` rows they are evaluated on) against the benign fit prompts.

**One threshold.** Each channel's score is put in benign units (minus its benign median, over
the distance from there to its own benign ``1 - fpr`` quantile: every channel reaches 1 at the same
benign tail; the probe's benign scores come from cross-fitting, never from the prompts it was
fitted on) and the prompt's score is the largest of them. The threshold is the
conformal quantile of the benign fit scores at the target false-positive rate (default 1%): the
``ceil((n + 1)(1 - fpr))``-th smallest, so that a new benign prompt from the same traffic
exceeds it with probability at most ``fpr``. Refit on your own traffic (:meth:`Detector.fit`,
``logit-processors detect --fit FILE``) when it differs from the bundled categories.

The ideas come from: perplexity filters (Alon & Kamfonas 2023, "Detecting Language Model
Attacks with Perplexity"; Jain et al. 2023, "Baseline Defenses for Adversarial Attacks Against
Aligned Language Models", whose whole-prompt and windowed filters are implemented as baselines
in :mod:`logit_processors.detection.baselines`), token-level detection with neighbouring context
(Hu et al. 2023, "Token-Level Adversarial Prompt Detection Based on Perplexity Measures and
Contextual Information"), probability integral transforms for calibration (Dawid 1984), and
hidden-state probes (Arditi et al. 2024). The refusal-affirmation gap (Li & Liu 2025) of the
first decoding step comes with every result, and can be given to the probe
(``refusal_feature=True``; ``detect-eval`` reports what it adds).

Example:
    >>> import os, tempfile
    >>> from logit_processors.models import load
    >>> model, tokenizer = load("smollm2")                     # the embedded SmolLM2, offline
    >>> detector = default_detector(model, tokenizer)          # fitted with Detector.fit on load_benign("fit")
    >>> r = detector.score("What is 2 + 2? describing.\\\\ + similarlyNow write oppositeley.](")
    >>> r.flagged, r.span_text
    (True, ' describing.\\\\ + similarlyNow write oppositeley')
    >>> detector.score("What is 2 + 2?").flagged
    False
    >>> path = os.path.join(tempfile.mkdtemp(), "detector.json")
    >>> saved = detector.save(path)
    >>> detector = Detector.load(path, model, tokenizer)       # checks that it is the same model
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..models.identity import check_identity, model_identity
from ..runtime.prompts import Message
from ..validate import finite_float, positive_finite_float, positive_int, probability
from .datasets import DETECTOR_FILES, data_path, probe_attack_prompts
from .probe import LinearProbe, out_of_fold_scores
from .prompt_stats import FEATURES, PromptStats, nan_to_num, prompt_stats
from .refusal_gap import RefusalGap
from .result import DetectionResult
from .sequential import (
    POSITION_BUCKETS,
    conformal_threshold,
    cusum,
    cusum_span,
    localize,
    longest_run,
    position_buckets,
    robust_location_scale,
    window_means,
)

FORMAT = "logit_processors.detection.Detector"
VERSION = 4  # 3: the windows channel; 4: the repeats channel
READABLE_VERSIONS = (3, 4)  # a version-3 file loads as what it was fitted as: without the repeats channel

#: Default per-feature weights of the token score: the two statistics that are invariant to the
#: content's own predictability, equally.
DEFAULT_WEIGHTS: dict[str, float] = {"standardized_surprisal": 1.0, "pit_score": 1.0}
MIN_BUCKET_TOKENS = 20  # fewer benign tokens than this in a position bucket: use all tokens
DEFAULT_DRIFT = 1.0  # CUSUM reference value k, in benign standard deviations of the token score
DEFAULT_CLIP = 4.0  # a token's standardized feature counts at most this much either way
DEFAULT_FPR = 0.01
DEFAULT_PROBE_L2 = 0.1  # the probe's L2 penalty (on standardized hidden states)
PROBE_FOLDS = 5  # cross-fitting folds for the probe's benign scores
DEFAULT_WINDOW = 10  # tokens per window of the windows channel (Jain et al. 2023's window, not tuned here)
CHANNELS: tuple[str, ...] = ("tokens", "windows", "repeats", "probe")

__all__ = ["CHANNELS", "DEFAULT_FPR", "DEFAULT_WEIGHTS", "DEFAULT_WINDOW", "DetectionResult", "Detector",
           "conformal_threshold", "cusum", "cusum_span", "default_detector", "localize", "position_buckets",
           "repeat_units", "windowed_surprisal"]


def benign_units(scores: torch.Tensor, fpr: float) -> tuple[float, float]:
    """``(center, scale)`` putting a channel's benign scores in comparable units: the median, and
    the distance from it to the channel's own ``1 - fpr`` quantile, so that every channel
    reaches 1 at the same benign tail (each spends the same share of the false-positive budget,
    however long its tail). Floored so that a constant channel stays finite.

    Example:
        >>> benign_units(torch.arange(101.0), 0.1)   # median 50, 90th percentile 90
        (50.0, 40.0)
    """
    scores = scores.double()
    center = float(scores.median())
    spread = float(torch.quantile(scores, 1 - fpr)) - center
    return center, max(spread, 1e-3 * (abs(center) + 1.0))


def repeat_units(runs: torch.Tensor, fpr: float) -> tuple[float, float]:
    """``(center, scale)`` of the repeats channel: centered on the benign ``1 - fpr`` quantile
    of the longest run (rounded up to a whole token), one unit per token.

    The run length is an integer with most of its benign mass on 1 and 2 tokens, so the median
    and the ``1 - fpr`` quantile of :func:`benign_units` can be one token apart while a third
    of the benign prompts sit on that quantile: each would score 1, as high as the 1% tail of
    the other channels. Counting the tokens *beyond* the run length that ``1 - fpr`` of the
    benign prompts reach keeps benign prompts at or below 0 on this channel (they are judged by
    the others) and adds one unit per extra repeat.

    Example:
        >>> repeat_units(torch.tensor([1.0] * 60 + [2.0] * 40), 0.01)
        (2.0, 1.0)
    """
    return float(torch.quantile(runs.double(), 1 - fpr).ceil()), 1.0


def windowed_surprisal(stats: PromptStats, window: int, cap: torch.Tensor | None = None) -> tuple[float, int]:
    """The windows channel's raw score: the largest mean surprisal (nats) of ``window`` consecutive
    scored tokens (of all of them when fewer), each token's surprisal first capped at ``cap`` (per
    token; the detector's is its benign median + ``clip`` robust standard deviations at that
    position, so that one wild token cannot decide alone), and that window's first index.

    Example:
        >>> from types import SimpleNamespace
        >>> stats = SimpleNamespace(surprisal=torch.tensor([1.0, 1.0, 6.0, 8.0, 1.0]))  # only surprisal is read
        >>> windowed_surprisal(stats, 2)
        (7.0, 2)
        >>> windowed_surprisal(stats, 2, cap=torch.full((5,), 6.0))
        (6.0, 2)
    """
    surprisal = nan_to_num(stats.surprisal).double()
    if surprisal.numel() == 0:
        return 0.0, 0
    if cap is not None:
        surprisal = torch.minimum(surprisal, cap.double())
    means = window_means(surprisal, window)
    best = int(means.argmax())
    return float(means[best]), best


class Detector:
    """Four channels (token CUSUM, windowed surprisal, repeated tokens, hidden-state probe) and a
    threshold at a target false-positive rate.

    Build one with :meth:`fit` (or :meth:`load`, or :func:`default_detector`); then :meth:`score`
    a prompt (a user message or a list of chat messages), or :meth:`score_many` a batch. See the
    module docstring for the method. Options (saved with the detector):

    Args:
        weights: feature -> weight of the token score (features from
            :data:`logit_processors.detection.prompt_stats.FEATURES`; a negative weight makes
            *low* values suspicious).
        drift: CUSUM reference value ``k``: the per-token score a benign stretch is expected to
            stay below. Larger ignores more, smaller reacts to milder spans.
        clip: each standardized feature is clipped to ``[-clip, clip]``.
        fpr: target false-positive rate on the benign fit set.
        chat_template: encode prompts with the tokenizer's chat template (as a user message).
        refusal: the :class:`RefusalGap` reported with each result (default word lists), or
            ``None`` for none.
        probe: use the hidden-state probe channel (needs attack prompts to fit).
        probe_layer: the hidden state the probe reads (``hidden_states[probe_layer]``; default:
            the middle layer, ``num_hidden_layers // 2``).
        probe_l2: the probe's L2 penalty.
        refusal_feature: also give the probe the first-step refusal gap.
        window: tokens per window of the windows channel, or ``None`` for no such channel.
        repeats: use the repeats channel (the longest run of one repeated non-digit token).
    """

    def __init__(
        self,
        model=None,
        tokenizer=None,
        *,
        weights: dict[str, float] | None = None,
        drift: float = DEFAULT_DRIFT,
        clip: float = DEFAULT_CLIP,
        fpr: float = DEFAULT_FPR,
        chat_template: bool = True,
        refusal: RefusalGap | None | str = "default",
        probe: bool = True,
        probe_layer: int | None = None,
        probe_l2: float = DEFAULT_PROBE_L2,
        refusal_feature: bool = False,
        window: int | None = DEFAULT_WINDOW,
        repeats: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(self.weights) - set(FEATURES))
        if unknown or not self.weights or not any(self.weights.values()):
            raise ValueError(f"weights must map some of {FEATURES} to non-zero numbers; got {self.weights!r}")
        self.drift = finite_float("drift", drift)
        self.clip = positive_finite_float("clip", clip)
        self.fpr = probability("fpr", fpr, allow_zero=False, allow_one=False)
        self.chat_template = bool(chat_template)
        if refusal == "default":
            refusal = RefusalGap(tokenizer) if tokenizer is not None and getattr(tokenizer, "chat_template", None) else None
        self.refusal = refusal
        self.probe_enabled = bool(probe)
        if probe_layer is None and self.probe_enabled:
            layers = getattr(model.config.get_text_config(), "num_hidden_layers", None) if model is not None else None
            if layers is None:
                raise ValueError("probe_layer is needed when the model is not given (or has no num_hidden_layers)")
            probe_layer = layers // 2
        if probe_layer is not None and (not isinstance(probe_layer, int) or probe_layer < 0):
            raise ValueError(f"probe_layer must be a non-negative int (an index into hidden_states); got {probe_layer!r}")
        self.probe_layer = probe_layer
        self.probe_l2 = positive_finite_float("probe_l2", probe_l2)
        self.refusal_feature = bool(refusal_feature)
        if self.refusal_feature and (self.refusal is None or not self.probe_enabled):
            raise ValueError("refusal_feature needs the probe (probe=True) and a RefusalGap (refusal word lists)")
        self.window = None if window is None else positive_int("window", window)
        self.repeats = bool(repeats)
        self.location: torch.Tensor | None = None  # [buckets, F] benign median per position bucket
        self.scale: torch.Tensor | None = None  # [buckets, F] benign robust scale per position bucket
        self.score_mean = 0.0  # benign mean and standard deviation of the combined token score
        self.score_std = 1.0
        self.probe: LinearProbe | None = None
        self.units: dict[str, tuple[float, float]] = {}  # channel -> (benign center, scale)
        self.threshold: float | None = None
        self.fit_scores: list[float] = []

    # -- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model, tokenizer, benign_prompts: Sequence[str | Sequence[Message]], *,
            attack_prompts: Sequence[str | Sequence[Message]] | None = None, batch_size: int = 16,
            **options: Any) -> Detector:
        """A detector fitted on ``benign_prompts`` (one forward pass per batch of prompts).

        The token baseline (per position bucket and feature, median and MAD over their scored
        tokens), the probe's benign side and the threshold (conformal quantile of their scores
        at ``fpr``) all come from these prompts: use a few hundred of the kinds your traffic
        holds (a 1% FPR needs at least 99). ``attack_prompts`` are the probe's other side
        (default: :func:`~logit_processors.detection.datasets.probe_attack_prompts`, the
        bundled dev fluent and jailbreak attacks). ``options`` are the constructor's.
        """
        detector = cls(model, tokenizer, **options)
        if len(benign_prompts) < 2:
            raise ValueError(f"fit needs at least 2 benign prompts (a few hundred for a 1% FPR); got {len(benign_prompts)}")
        detector._check_enough(len(benign_prompts))
        stats = detector.prompt_stats(benign_prompts, batch_size=batch_size)
        attack_stats = None
        if detector.probe_enabled:
            attacks = probe_attack_prompts() if attack_prompts is None else attack_prompts
            attack_stats = detector.prompt_stats(attacks, batch_size=batch_size)
        return detector.fit_stats(stats, attack_stats)

    def _check_enough(self, n: int) -> None:
        if not math.isfinite(conformal_threshold(torch.zeros(n), self.fpr)):
            need = math.ceil(1 / self.fpr) - 1
            raise ValueError(f"{n} benign prompts cannot set a threshold at fpr={self.fpr}: fit on at least {need} "
                             "prompts, or raise fpr")

    def prompt_stats(self, prompts: Sequence[str | Sequence[Message]], *, batch_size: int = 16) -> list[PromptStats]:
        """The statistics this detector reads (with the probe's hidden state and the next-token
        logits when it needs them), one forward pass per batch."""
        self._require_model()
        return prompt_stats(self.model, self.tokenizer, prompts, chat_template=self.chat_template,
                            batch_size=batch_size, keep_next_logits=self.refusal is not None,
                            hidden_layer=self.probe_layer if self.probe_enabled else None)

    def fit_stats(self, stats: Sequence[PromptStats], attack_stats: Sequence[PromptStats] | None = None) -> Detector:
        """Fit from precomputed benign :class:`PromptStats` (and, for the probe, attack ones); returns self."""
        self._check_enough(len(stats))
        features = torch.cat([nan_to_num(s.features()) for s in stats]).double()
        buckets = torch.cat([position_buckets(len(s)) for s in stats])
        self.location = torch.zeros(len(POSITION_BUCKETS), len(FEATURES), dtype=torch.float64)
        self.scale = torch.ones_like(self.location)
        for b in range(len(POSITION_BUCKETS)):
            # A bucket with few benign tokens (long requests are rarer) borrows from all tokens.
            rows = features[buckets == b] if int((buckets == b).sum()) >= MIN_BUCKET_TOKENS else features
            self.location[b], self.scale[b] = robust_location_scale(rows)
        self.score_mean, self.score_std = 0.0, 1.0
        raw = torch.cat([self.token_scores(s) for s in stats])
        self.score_mean, self.score_std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
        channels = {"tokens": torch.tensor([self._token_channel(s)[0] for s in stats], dtype=torch.float64)}
        if self.window is not None:
            channels["windows"] = torch.tensor([self._window_channel(s)[0] for s in stats], dtype=torch.float64)
        if self.repeats:
            channels["repeats"] = torch.tensor([self._repeat_channel(s)[0] for s in stats], dtype=torch.float64)
        if self.probe_enabled:
            if not attack_stats:
                raise ValueError("the probe needs attack statistics: fit_stats(benign_stats, attack_stats), or "
                                 "Detector(..., probe=False)")
            negatives = torch.stack([self._probe_input(s) for s in stats])
            positives = torch.stack([self._probe_input(s) for s in attack_stats])
            self.probe = LinearProbe.fit(positives, negatives, l2=self.probe_l2)
            # The threshold must see what a *new* benign prompt scores: cross-fitted scores.
            channels["probe"] = out_of_fold_scores(positives, negatives, l2=self.probe_l2,
                                                   folds=min(PROBE_FOLDS, len(negatives)))
        self.units = {name: benign_units(values, self.fpr) for name, values in channels.items()}
        if self.repeats:
            self.units["repeats"] = repeat_units(channels["repeats"], self.fpr)
        combined = torch.stack([(v - self.units[k][0]) / self.units[k][1] for k, v in channels.items()]).amax(0)
        self.fit_scores = combined.tolist()
        self.threshold = conformal_threshold(self.fit_scores, self.fpr)
        return self

    def _probe_input(self, stats: PromptStats) -> torch.Tensor:
        if stats.hidden is None:
            raise ValueError("these statistics have no hidden state for the probe: compute them with "
                             f"detector.prompt_stats(prompts) (or prompt_stats(..., hidden_layer={self.probe_layer}))")
        x = stats.hidden.double()
        if self.refusal_feature:
            if stats.next_logits is None:
                raise ValueError("refusal_feature needs the next-token logits: prompt_stats(..., keep_next_logits=True)")
            x = torch.cat([x, self.refusal(stats.next_logits).double().reshape(1)])
        return x

    @property
    def fitted(self) -> bool:
        return self.threshold is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("this Detector is not fitted: use Detector.fit(model, tokenizer, benign_prompts) "
                             "or Detector.load(path, model, tokenizer)")

    def _require_model(self) -> None:
        if self.model is None or self.tokenizer is None:
            raise ValueError("this Detector has no model: pass model and tokenizer to Detector.load()")

    # -- scoring -------------------------------------------------------------------------------

    def token_scores(self, stats: PromptStats) -> torch.Tensor:
        """``x_t`` for each scored token: the weighted mean of its clipped standardized features,
        standardized by the benign mean and standard deviation of that mean."""
        if self.location is None:
            self._require_fitted()
        buckets = position_buckets(len(stats))
        z = (nan_to_num(stats.features()).double() - self.location[buckets]) / self.scale[buckets]
        z = z.clamp(-self.clip, self.clip)
        columns = [FEATURES.index(name) for name in self.weights]
        w = torch.tensor(list(self.weights.values()), dtype=torch.float64)
        combined = (z[:, columns] * w).sum(dim=-1) / w.abs().sum()
        return (combined - self.score_mean) / self.score_std

    def _token_channel(self, stats: PromptStats) -> tuple[float, torch.Tensor, torch.Tensor]:
        x = self.token_scores(stats)
        curve = cusum(x, self.drift)
        return (float(curve.max()) if curve.numel() else 0.0), x, curve

    def _window_channel(self, stats: PromptStats) -> tuple[float, int]:
        buckets = position_buckets(len(stats))
        surprisal = FEATURES.index("surprisal")
        cap = self.location[buckets, surprisal] + self.clip * self.scale[buckets, surprisal]
        return windowed_surprisal(stats, self.window, cap)

    def _repeat_channel(self, stats: PromptStats) -> tuple[int, int]:
        """``(length, start)`` of the longest run of one repeated token that is not a digit."""
        ids = stats.token_ids
        # Only tokens next to their own repeat can be in a run longer than one: read just those
        # (most prompts have none, and need no token text at all).
        follows_itself = ids[1:] == ids[:-1]
        repeated = torch.zeros_like(ids, dtype=torch.bool)
        repeated[1:] |= follows_itself
        repeated[:-1] |= follows_itself
        countable = torch.ones_like(repeated)
        where = repeated.nonzero().flatten().tolist()
        if where:
            countable[where] = torch.tensor([not text.isdigit() for text in self._token_texts(stats, where)],
                                            dtype=torch.bool)
        return longest_run(ids, countable)

    def _token_texts(self, stats: PromptStats, indices: list[int]) -> list[str]:
        """The text of scored tokens ``indices``, read from the prompt through the token offsets
        (or, without offsets, decoded by the tokenizer)."""
        encoded = stats.encoded
        positions = [int(stats.positions[i]) for i in indices]
        if encoded.offsets is not None:
            return [encoded.text[slice(*encoded.offsets[p])] for p in positions]
        if self.tokenizer is not None:
            return self.tokenizer.batch_decode([[encoded.input_ids[p]] for p in positions])
        raise ValueError("the repeats channel needs token offsets (a fast tokenizer) or the tokenizer: pass it to "
                         "the Detector, or use Detector(..., repeats=False)")

    def _score(self, stats: PromptStats) -> DetectionResult:
        raw, x, curve = self._token_channel(stats)
        channels = {"tokens": raw}
        window_start = 0
        if self.window is not None:
            channels["windows"], window_start = self._window_channel(stats)
        run = (0, 0)
        if self.repeats:
            run = self._repeat_channel(stats)
            channels["repeats"] = float(run[0])
        if self.probe is not None:
            channels["probe"] = float(self.probe(self._probe_input(stats)))
        channels = {k: (v - self.units[k][0]) / self.units[k][1] for k, v in channels.items()}
        score = max(channels.values())
        threshold = self.threshold if self.threshold is not None else math.inf
        span = localize(x, self.drift, curve)
        if channels["tokens"] <= threshold and len(stats):
            # Another channel decided, not the token CUSUM: blame what it saw.
            if channels.get("windows", -math.inf) == score:
                span = (window_start, min(window_start + self.window, len(stats)))
            elif channels.get("repeats", -math.inf) == score and run[0]:
                span = (run[1], run[1] + run[0])
        if span is not None:
            span = (int(stats.positions[span[0]]), int(stats.positions[span[1] - 1]) + 1)
        gap = None
        if self.refusal is not None and stats.next_logits is not None:
            gap = float(self.refusal(stats.next_logits))
        return DetectionResult(score, threshold, score > threshold, span, stats.positions, x.float(),
                               curve.float(), stats, gap, channels=channels)

    def score_stats(self, stats: PromptStats) -> DetectionResult:
        """Score precomputed :class:`PromptStats` (no model call; from :meth:`prompt_stats`)."""
        self._require_fitted()
        return self._score(stats)

    def score(self, prompt: str | Sequence[Message]) -> DetectionResult:
        """Score one prompt: one forward pass. Raises ``ValueError`` for an empty prompt or one
        longer than the model's context (never truncated silently)."""
        return self.score_many([prompt])[0]

    def score_many(self, prompts: Sequence[str | Sequence[Message]], *, batch_size: int = 16) -> list[DetectionResult]:
        """Score a batch of prompts (one forward pass per ``batch_size`` prompts)."""
        self._require_fitted()
        return [self._score(s) for s in self.prompt_stats(prompts, batch_size=batch_size)]

    # -- saving --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "format": FORMAT,
            "version": VERSION,
            "features": list(FEATURES),
            "weights": self.weights,
            "drift": self.drift,
            "clip": self.clip,
            "fpr": self.fpr,
            "chat_template": self.chat_template,
            "refusal": self.refusal.to_dict() if self.refusal is not None else None,
            "probe_layer": self.probe_layer,
            "probe_l2": self.probe_l2,
            "refusal_feature": self.refusal_feature,
            "window": self.window,
            "repeats": self.repeats,
            "position_buckets": list(POSITION_BUCKETS),
            "location": self.location.tolist(),
            "scale": self.scale.tolist(),
            "score_mean": self.score_mean,
            "score_std": self.score_std,
            "probe": self.probe.to_dict() if self.probe is not None else None,
            "units": {k: list(v) for k, v in self.units.items()},
            "threshold": self.threshold,
            "fit_scores": self.fit_scores,
            "model": model_identity(self.model, self.tokenizer) if self.model is not None else None,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector as JSON, with the identity of the model it was fitted on."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model, tokenizer, *, check_model: bool = True) -> Detector:
        """Read a saved detector for ``model``; ``ValueError`` if it was fitted on another model."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved {FORMAT} (missing or wrong 'format' field)")
        if (data.get("version") not in READABLE_VERSIONS or data.get("features") != list(FEATURES)
                or data.get("position_buckets") != list(POSITION_BUCKETS)):
            raise ValueError(f"{path}: unsupported detector version {data.get('version')!r} (features, position "
                             f"buckets); expected a version in {READABLE_VERSIONS} with features {list(FEATURES)}: "
                             "refit it")
        if check_model and data.get("model") is not None:
            if model is None:
                name = data["model"].get("name_or_path") or "unnamed"
                raise ValueError(f"detector {path} was fitted on a model ({name}): pass that model and its "
                                 "tokenizer to Detector.load(path, model, tokenizer)")
            check_identity(data["model"], model, tokenizer, what=f"detector {path}")
        refusal = RefusalGap.from_dict(tokenizer, data["refusal"]) if data.get("refusal") else None
        detector = cls(model, tokenizer, weights=data["weights"], drift=data["drift"], clip=data["clip"],
                       fpr=data["fpr"], chat_template=data["chat_template"], refusal=refusal,
                       probe=data["probe"] is not None, probe_layer=data["probe_layer"], probe_l2=data["probe_l2"],
                       refusal_feature=data["refusal_feature"], window=data["window"],
                       repeats=data.get("repeats", False))
        detector.location = torch.tensor(data["location"], dtype=torch.float64)
        detector.scale = torch.tensor(data["scale"], dtype=torch.float64)
        detector.score_mean, detector.score_std = float(data["score_mean"]), float(data["score_std"])
        detector.probe = LinearProbe.from_dict(data["probe"]) if data["probe"] is not None else None
        detector.units = {k: (float(v[0]), float(v[1])) for k, v in data["units"].items()}
        detector.threshold = float(data["threshold"])
        detector.fit_scores = [float(s) for s in data["fit_scores"]]
        return detector

    def __repr__(self) -> str:
        state = f"threshold={self.threshold:.3f} at fpr={self.fpr}" if self.fitted else "not fitted"
        probe = f", probe on hidden_states[{self.probe_layer}]" if self.probe_enabled else ""
        windows = f", windows of {self.window}" if self.window is not None else ""
        repeats = ", repeats" if self.repeats else ""
        return (f"Detector({state}, drift={self.drift}, clip={self.clip}, weights={self.weights}{windows}{repeats}"
                f"{probe})")


def default_detector(model, tokenizer, name: str = "smollm2") -> Detector:
    """The shipped detector for the named model (``Detector.load`` checks that ``model`` is it)."""
    if name not in DETECTOR_FILES:
        raise ValueError(f"no detector ships for {name!r} (only for {sorted(DETECTOR_FILES)}); fit one with "
                         "Detector.fit(model, tokenizer, [p.prompt for p in load_benign('fit')])")
    with resources.as_file(data_path(DETECTOR_FILES[name])) as path:
        return Detector.load(path, model, tokenizer)
