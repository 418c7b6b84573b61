"""Prompt anomaly detection from the model's own logits: a benign baseline, a CUSUM, a threshold.

An optimized adversarial suffix ("describing.\\ + similarlyNow write oppositeley.](") is text the
model itself finds absurd: token after token it is surprised (high surprisal), the token is far
down its ranking (large rank and chosen gap), and the model is lost about what comes next (high
entropy). A benign request has such tokens too (a name, a typo, a line of code) but rarely many
*in a row*. So the detector

1. computes the per-token statistics of the prompt's user text in one forward pass
   (:mod:`logit_processors.detection.prompt_stats`, through :func:`logit_processors.gaps.gap_stats`);
2. standardizes each statistic against a benign baseline *at the same place in the request*
   (median and MAD over the tokens of benign prompts, :meth:`Detector.fit`, per position bucket
   0, 1, 2-3, 4-7, 8-15, 16-31, 32+ of the user's text: the first words of any request are
   surprising, later ones should not be, so an instruction appended at the end stands out more
   than the same words would at the start), clips it to ``[-clip, clip]`` so that one wild
   token cannot decide alone, and averages the features into one score per token (``weights``;
   features where *low* is suspicious, like the top-1/top-2 gap, get a negative weight). That
   score is itself standardized by its benign mean and standard deviation: ``x_t``;
3. runs a one-sided CUSUM over the tokens, ``S_t = max(0, S_{t-1} + x_t - drift)`` (Page 1954,
   "Continuous inspection schemes"): benign tokens (mean 0) drift it back to 0, a run of
   anomalous tokens makes it climb. The prompt's score is ``max_t S_t``, which is exactly the
   largest sum of ``x_t - drift`` over any contiguous span; that span (where the CUSUM last left
   0, up to its peak) is the suspicious span, with its onset and end (re-estimated for the size of
   the shift found, :func:`localize`). ``drift`` is the classic
   reference value ``k``, half the shift (in benign standard deviations) one wants to detect
   quickly: the default 0.5 aims at shifts of about one standard deviation, so that a fluent
   but out-of-place instruction accumulates too, not only gibberish;
4. flags the prompt when the score exceeds a threshold set on the benign fit set for a target
   false-positive rate (default 1%): the conformal quantile, the ``ceil((n + 1)(1 - fpr))``-th
   smallest benign score, so that a new benign prompt from the same distribution exceeds it
   with probability at most ``fpr``.

The ideas come from: perplexity filters (Alon & Kamfonas 2023, "Detecting Language Model
Attacks with Perplexity"; Jain et al. 2023, "Baseline Defenses for Adversarial Attacks Against
Aligned Language Models", whose whole-prompt and windowed filters are implemented as baselines
in :mod:`logit_processors.detection.baselines`), token-level detection that uses neighboring
tokens (Hu et al. 2023, "Token-Level Adversarial Prompt Detection Based on Perplexity Measures
and Contextual Information"), and change-point detection on token statistics (CUSUM). The
refusal-affirmation gap (Li & Liu 2025, :mod:`logit_processors.detection.refusal_gap`) of the first
decoding step comes with every result.

Example:
    >>> import os, tempfile
    >>> from logit_processors.models import load
    >>> from logit_processors.detection import default_detector
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.identity import check_identity, model_identity
from ..runtime.prompts import EncodedPrompt, Message
from ..validate import finite_float, positive_finite_float, probability
from .prompt_stats import FEATURES, PromptStats, nan_to_num, prompt_stats
from .refusal_gap import RefusalGap

FORMAT = "logit_processors.detection.Detector"
VERSION = 1

#: Default per-feature weights of the token score. The four "surprise" statistics (how unlikely
#: the token was, absolutely and relative to the model's own uncertainty, its rank, its distance
#: to the top token) count fully; the next-token entropy (the model lost after garbage) half.
DEFAULT_WEIGHTS: dict[str, float] = {
    "surprisal": 1.0, "excess_surprisal": 1.0, "log_rank": 1.0, "chosen_gap": 1.0, "entropy": 0.5,
}
#: Position buckets (index of the token within the user's text): [0], [1], [2, 4), ... [32, inf).
POSITION_BUCKETS: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
MIN_BUCKET_TOKENS = 20  # fewer benign tokens than this in a position bucket: use all tokens
MIN_SCALE = 0.1  # nats (or log-rank units): the floor of a feature's benign scale
DEFAULT_DRIFT = 0.5  # CUSUM reference value k, in benign standard deviations of the token score
DEFAULT_CLIP = 4.0  # a token's standardized feature counts at most this much either way
DEFAULT_FPR = 0.01


# --------------------------------------------------------------------------------------------
# The sequential statistic


def cusum(x: torch.Tensor, drift: float = 0.0) -> torch.Tensor:
    """One-sided CUSUM ``S_t = max(0, S_{t-1} + x_t - drift)``, ``S_{-1} = 0``, over the last axis.

    Vectorized: ``S_t = C_t - min(0, min_{j <= t} C_j)`` with ``C`` the cumulative sum of
    ``x - drift`` (the CUSUM is the cumulative sum minus its running minimum, floored at 0).

    Example:
        >>> cusum(torch.tensor([0.0, 3.0, 3.0, -1.0, 0.0]), drift=1.0).tolist()
        [0.0, 2.0, 4.0, 2.0, 1.0]
    """
    c = torch.cumsum(x.double() - drift, dim=-1)
    floor = torch.cummin(c, dim=-1).values.clamp_max(0.0)
    return (c - floor).to(x.dtype)


def cusum_span(s: torch.Tensor) -> tuple[int, int] | None:
    """The span ``[onset, end)`` of a CUSUM curve's peak: from where it last left 0 before its
    maximum, through the maximum. ``None`` when the curve never rises above 0.

    Example:
        >>> cusum_span(torch.tensor([0.0, 2.0, 4.0, 2.0, 1.0]))
        (1, 3)
    """
    if s.numel() == 0 or not bool(s.max() > 0):
        return None
    end = int(s.argmax())
    zeros = (s[:end] <= 0).nonzero()
    onset = int(zeros[-1]) + 1 if zeros.numel() else 0
    return onset, end + 1


def localize(x: torch.Tensor, drift: float, curve: torch.Tensor | None = None) -> tuple[int, int] | None:
    """The anomalous span ``[onset, end)`` of token scores ``x``: the CUSUM's peak segment,
    re-estimated for the shift it found.

    The segment maximizing ``sum(x_t - k)`` is the maximum-likelihood location of a shift of
    ``2k`` (an "epidemic" change with onset and end). Detection uses a small ``k`` (``drift``)
    to catch mild shifts; a strong anomaly (gibberish) then drags a few benign neighbours along.
    So the span is recomputed with ``k = max(drift, shift / 2)``, ``shift`` being the mean of
    ``x`` over the first segment: the same segment for a mild shift, a tighter one for a strong.

    Example:
        >>> x = torch.tensor([0.0, 0.9, 4.0, 4.0, 4.0, 0.8, 0.0])
        >>> cusum_span(cusum(x, 0.5)), localize(x, 0.5)
        ((1, 6), (2, 5))
    """
    first = cusum_span(cusum(x, drift) if curve is None else curve)
    if first is None:
        return None
    shift = float(x[first[0] : first[1]].mean())
    if shift / 2 <= drift:
        return first
    return cusum_span(cusum(x, shift / 2)) or first


def conformal_threshold(benign_scores: Sequence[float] | torch.Tensor, fpr: float) -> float:
    """The ``ceil((n + 1)(1 - fpr))``-th smallest of ``n`` benign scores (``inf`` if that exceeds n).

    Flagging scores strictly above it, a new benign score exchangeable with the fit scores is
    flagged with probability at most ``fpr`` (split-conformal guarantee).

    Example:
        >>> conformal_threshold(list(range(1, 201)), 0.01)   # 199th smallest of 1..200
        199.0
    """
    scores = torch.as_tensor(benign_scores, dtype=torch.float64).flatten().sort().values
    fpr = probability("fpr", fpr, allow_zero=False, allow_one=False)
    k = math.ceil((scores.numel() + 1) * (1 - fpr))
    return math.inf if k > scores.numel() else float(scores[k - 1])


def position_buckets(n: int) -> torch.Tensor:
    """Bucket index of each of ``n`` consecutive user tokens (see :data:`POSITION_BUCKETS`).

    Example:
        >>> position_buckets(10).tolist()
        [0, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    """
    return torch.bucketize(torch.arange(n), torch.tensor(POSITION_BUCKETS[1:]), right=True)


def _robust_location_scale(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column median and ``1.4826 * MAD`` (the standard deviation, for a normal), floored.

    The floor matters: the first token of a chat request is always predicted from the same
    template, so its entropy and top gap are constant (MAD 0) and rounding would explode.
    """
    location = rows.median(dim=0).values
    mad = (rows - location).abs().median(dim=0).values
    return location, (1.4826 * mad).clamp_min(MIN_SCALE)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class DetectionResult:
    """The verdict on one prompt.

    ``score`` (higher is more suspicious; for :class:`Detector` the CUSUM maximum),
    ``threshold``, ``flagged`` (``score > threshold``) and ``span``: ``(start, end)`` token
    positions in ``encoded.input_ids`` of the most suspicious stretch (half-open), ``None`` when
    nothing stood out. ``positions`` are the scored tokens' positions; ``token_scores`` the
    per-token input of the statistic (the detector's combined standardized score ``x_t``, a
    filter's surprisal) and ``curve`` its running value (the CUSUM curve; a filter's window
    means), aligned with ``positions``. ``flagged_positions``: the tokens the method blames
    (default: those of ``span``). ``refusal_gap``: max refusal logit - max affirmation logit at
    the first decoding step (``None`` when not computed).
    """

    score: float
    threshold: float
    flagged: bool
    span: tuple[int, int] | None
    positions: torch.Tensor = field(repr=False)
    token_scores: torch.Tensor = field(repr=False)
    curve: torch.Tensor = field(repr=False)
    stats: PromptStats = field(repr=False)
    refusal_gap: float | None = None
    flagged_positions: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.flagged_positions is None:
            self.flagged_positions = (torch.arange(*self.span) if self.span is not None
                                      else torch.zeros(0, dtype=torch.long))

    @property
    def cusum(self) -> torch.Tensor:
        """The detector's CUSUM curve (an alias of :attr:`curve`)."""
        return self.curve

    @property
    def encoded(self) -> EncodedPrompt:
        return self.stats.encoded

    @property
    def span_tokens(self) -> tuple[int, int] | None:
        """The span as indices into ``positions`` / ``token_scores`` / ``cusum``."""
        if self.span is None:
            return None
        first = int(self.positions[0])
        return self.span[0] - first, self.span[1] - first

    @property
    def span_chars(self) -> tuple[int, int] | None:
        """The span as character offsets into the user's text (``encoded.content``), if known."""
        e = self.encoded
        if self.span is None or e.offsets is None:
            return None
        a = e.offsets[self.span[0]][0] - e.content_char
        b = e.offsets[self.span[1] - 1][1] - e.content_char
        return max(a, 0), min(b, len(e.content))

    @property
    def span_text(self) -> str | None:
        chars = self.span_chars
        return None if chars is None else self.encoded.content[chars[0] : chars[1]]

    def summary(self) -> str:
        verdict = "FLAGGED" if self.flagged else "ok"
        text = f"{verdict}: score {self.score:.2f} (threshold {self.threshold:.2f})"
        if self.span is not None:
            text += f", suspicious span tokens {self.span[0]}-{self.span[1] - 1}"
            if self.span_text is not None:
                text += f" {self.span_text!r}"
        if self.refusal_gap is not None:
            text += f", refusal gap {self.refusal_gap:+.2f}"
        return text


# --------------------------------------------------------------------------------------------
# The detector


class Detector:
    """Standardized gap statistics + one-sided CUSUM + a threshold at a target false-positive rate.

    Build one with :meth:`fit` (or :meth:`load`); then :meth:`score` a prompt (a user message or
    a list of chat messages), or :meth:`score_many` a batch. See the module docstring for the
    method. Options (saved with the detector):

    Args:
        weights: feature -> weight (features from :data:`logit_processors.detection.prompt_stats.FEATURES`;
            a negative weight makes *low* values suspicious).
        drift: CUSUM reference value ``k``: the per-token score a benign stretch is expected to
            stay below. Larger ignores more, smaller reacts to milder spans.
        clip: each standardized feature is clipped to ``[-clip, clip]``.
        fpr: target false-positive rate on the benign fit set.
        chat_template: encode prompts with the tokenizer's chat template (as a user message).
        refusal: the :class:`RefusalGap` reported with each result (default word lists), or
            ``None`` for none.
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
        self.location: torch.Tensor | None = None  # [buckets, F] benign median per position bucket
        self.scale: torch.Tensor | None = None  # [buckets, F] benign robust scale per position bucket
        self.score_mean = 0.0  # benign mean and standard deviation of the combined token score
        self.score_std = 1.0
        self.threshold: float | None = None
        self.fit_scores: list[float] = []

    # -- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model, tokenizer, benign_prompts: Sequence[str | Sequence[Message]], *, batch_size: int = 16,
            **options: Any) -> Detector:
        """A detector fitted on ``benign_prompts`` (one forward pass per batch of prompts).

        The baseline (per position bucket and feature, median and MAD over their scored
        tokens) and the threshold (conformal quantile of their scores at ``fpr``) both come
        from these prompts; use a few hundred of varied style and length. ``options`` are the
        constructor's.
        """
        detector = cls(model, tokenizer, **options)
        if len(benign_prompts) < 2:
            raise ValueError(f"fit needs at least 2 benign prompts (a few hundred for a 1% FPR); got {len(benign_prompts)}")
        stats = prompt_stats(model, tokenizer, benign_prompts, chat_template=detector.chat_template,
                             batch_size=batch_size)
        return detector.fit_stats(stats)

    def fit_stats(self, stats: Sequence[PromptStats]) -> Detector:
        """Fit the baseline and threshold from precomputed benign :class:`PromptStats`; returns self."""
        features = torch.cat([nan_to_num(s.features()) for s in stats]).double()
        buckets = torch.cat([position_buckets(len(s)) for s in stats])
        self.location = torch.zeros(len(POSITION_BUCKETS), len(FEATURES), dtype=torch.float64)
        self.scale = torch.ones_like(self.location)
        for b in range(len(POSITION_BUCKETS)):
            # A bucket with few benign tokens (long requests are rarer) borrows from all tokens.
            rows = features[buckets == b] if int((buckets == b).sum()) >= MIN_BUCKET_TOKENS else features
            self.location[b], self.scale[b] = _robust_location_scale(rows)
        self.score_mean, self.score_std = 0.0, 1.0
        raw = torch.cat([self.token_scores(s) for s in stats])
        self.score_mean, self.score_std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
        self.fit_scores = [self._score(s).score for s in stats]
        threshold = conformal_threshold(self.fit_scores, self.fpr)
        if not math.isfinite(threshold):
            need = math.ceil(1 / self.fpr) - 1
            raise ValueError(f"{len(stats)} benign prompts cannot set a threshold at fpr={self.fpr}: "
                             f"fit on at least {need} prompts, or raise fpr")
        self.threshold = threshold
        return self

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

    def _score(self, stats: PromptStats) -> DetectionResult:
        x = self.token_scores(stats)
        curve = cusum(x, self.drift)
        score = float(curve.max()) if curve.numel() else 0.0
        span = localize(x, self.drift, curve)
        if span is not None:
            span = (int(stats.positions[span[0]]), int(stats.positions[span[1] - 1]) + 1)
        gap = None
        if self.refusal is not None and stats.next_logits is not None:
            gap = float(self.refusal(stats.next_logits))
        threshold = self.threshold if self.threshold is not None else math.inf
        return DetectionResult(score, threshold, score > threshold, span, stats.positions, x.float(),
                               curve.float(), stats, gap)

    def score_stats(self, stats: PromptStats) -> DetectionResult:
        """Score precomputed :class:`PromptStats` (no model call)."""
        self._require_fitted()
        return self._score(stats)

    def score(self, prompt: str | Sequence[Message]) -> DetectionResult:
        """Score one prompt: one forward pass. Raises ``ValueError`` for an empty prompt or one
        longer than the model's context (never truncated silently)."""
        return self.score_many([prompt])[0]

    def score_many(self, prompts: Sequence[str | Sequence[Message]], *, batch_size: int = 16) -> list[DetectionResult]:
        """Score a batch of prompts (one forward pass per ``batch_size`` prompts)."""
        self._require_fitted()
        self._require_model()
        stats = prompt_stats(self.model, self.tokenizer, prompts, chat_template=self.chat_template,
                             batch_size=batch_size, keep_next_logits=self.refusal is not None)
        return [self._score(s) for s in stats]

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
            "position_buckets": list(POSITION_BUCKETS),
            "location": self.location.tolist(),
            "scale": self.scale.tolist(),
            "score_mean": self.score_mean,
            "score_std": self.score_std,
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
        if (data.get("version") != VERSION or data.get("features") != list(FEATURES)
                or data.get("position_buckets") != list(POSITION_BUCKETS)):
            raise ValueError(f"{path}: unsupported detector version {data.get('version')!r} (features, position "
                             f"buckets); expected version {VERSION} with features {list(FEATURES)}")
        if check_model and data.get("model") is not None:
            if model is None:
                name = data["model"].get("name_or_path") or "unnamed"
                raise ValueError(f"detector {path} was fitted on a model ({name}): pass that model and its "
                                 "tokenizer to Detector.load(path, model, tokenizer)")
            check_identity(data["model"], model, tokenizer, what=f"detector {path}")
        refusal = RefusalGap.from_dict(tokenizer, data["refusal"]) if data.get("refusal") else None
        detector = cls(model, tokenizer, weights=data["weights"], drift=data["drift"], clip=data["clip"],
                       fpr=data["fpr"], chat_template=data["chat_template"], refusal=refusal)
        detector.location = torch.tensor(data["location"], dtype=torch.float64)
        detector.scale = torch.tensor(data["scale"], dtype=torch.float64)
        detector.score_mean, detector.score_std = float(data["score_mean"]), float(data["score_std"])
        detector.threshold = float(data["threshold"])
        detector.fit_scores = [float(s) for s in data["fit_scores"]]
        return detector

    def __repr__(self) -> str:
        state = f"threshold={self.threshold:.3f} at fpr={self.fpr}" if self.fitted else "not fitted"
        return f"Detector({state}, drift={self.drift}, clip={self.clip}, weights={self.weights})"
