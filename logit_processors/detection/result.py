"""The verdict of a detector (or a perplexity filter) on one prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..runtime.prompts import EncodedPrompt
from .prompt_stats import PromptStats


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
    the first decoding step (``None`` when not computed). ``channels``: the detector's score per
    channel (``"tokens"``: the CUSUM; ``"windows"``: the worst window's mean surprisal;
    ``"repeats"``: the longest run of one repeated token, in tokens beyond the benign tail;
    ``"probe"``: the hidden-state probe), each in benign
    standard units; ``score`` is their maximum.
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
    channels: dict[str, float] = field(default_factory=dict)

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
        if self.channels:
            text += " [" + ", ".join(f"{name} {value:.2f}" for name, value in self.channels.items()) + "]"
        if self.refusal_gap is not None:
            text += f", refusal gap {self.refusal_gap:+.2f}"
        return text


__all__ = ["DetectionResult"]
