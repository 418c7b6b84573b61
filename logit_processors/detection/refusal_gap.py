"""The refusal-affirmation logit gap: how far a chat model leans towards refusing.

At the first decoding step of a chat reply, compare the best *refusal* opener ("Sorry",
"I cannot", ...) with the best *affirmative* opener ("Sure", "Here", ...)::

    gap = max_{r in refusal} z_r  -  max_{a in affirmation} z_a

A logit difference is a log-odds (``z_r - z_a = log(p_r / p_a)``), so the gap says by how many
nats the model prefers its most likely refusal over its most likely compliance; it is
shift-invariant (raw logits and log-probabilities give the same gap). Alignment widens it on
harmful requests; an adversarial suffix that makes the model comply works by closing it
(Li & Liu 2025, "Logit-Gap Steering: A Forward-Pass Diagnostic for Alignment Robustness").

Token sets come from configurable word lists: each phrase contributes the *first token* of its
encoding (the token the reply would start with), as written and, with ``variants=True``, with
a leading space (for models that continue a text rather than open a chat turn). "I cannot"
therefore contributes "I": openers are judged by their first token only. A token that lands in
both sets is dropped from both.

Example:
    >>> import torch
    >>> from logit_processors.models import load_tiny_gpt2
    >>> _, tokenizer = load_tiny_gpt2()
    >>> gap = RefusalGap(tokenizer, refusal=["No"], affirmation=["Yes"])
    >>> gap(torch.zeros(1, len(tokenizer))).tolist()                        # every opener as likely
    [0.0]
    >>> scores = torch.zeros(1, len(tokenizer))
    >>> scores[0, gap.refusal_ids] = 2.0                                    # refusing is more likely
    >>> round(gap(scores).item(), 3)
    2.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .. import numerics
from ..core import DeviceCache
from ..validate import check_ids_in_range

#: Refusal openers (English). Their first tokens form the refusal set.
DEFAULT_REFUSAL: tuple[str, ...] = (
    "Sorry", "I'm sorry", "I cannot", "I can't", "I apologize", "Unfortunately", "As an AI",
)
#: Affirmative openers (English). Their first tokens form the affirmation set.
DEFAULT_AFFIRMATION: tuple[str, ...] = (
    "Sure", "Here", "Certainly", "Absolutely", "Of course", "Yes", "Okay", "Great",
)


def opener_token_ids(tokenizer, phrases: Iterable[str], *, variants: bool = True) -> list[int]:
    """Sorted ids of the first token of each phrase (and of ``" " + phrase`` with ``variants``)."""
    if isinstance(phrases, str):
        raise ValueError(f"phrases must be a list of strings, not one string; got {phrases!r}")
    ids: set[int] = set()
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(f"each phrase must be a non-empty string; got {phrase!r}")
        spellings = {phrase.strip()} | ({" " + phrase.strip()} if variants else set())
        for spelling in spellings:
            encoded = tokenizer.encode(spelling, add_special_tokens=False)
            if encoded:
                ids.add(int(encoded[0]))
    return sorted(ids)


class RefusalGap:
    """``max refusal logit - max affirmation logit`` of next-token scores ``[..., V]``.

    Positive: the model leans towards refusing; negative: towards complying.
    :meth:`affirmation_logprob` gives ``log P(reply opens affirmatively)`` (the log of the
    affirmation set's total probability), the objective a suffix attack maximizes.

    Args:
        tokenizer: the model's tokenizer (token sets are derived from it once).
        refusal, affirmation: opener phrases (see the module docstring).
        variants: also take the first token of each phrase with a leading space.
    """

    def __init__(
        self,
        tokenizer,
        refusal: Sequence[str] = DEFAULT_REFUSAL,
        affirmation: Sequence[str] = DEFAULT_AFFIRMATION,
        *,
        variants: bool = True,
    ):
        for name, words in (("refusal", refusal), ("affirmation", affirmation)):
            if isinstance(words, str):  # tuple("Sorry") would be five one-letter openers
                raise ValueError(f"{name} must be a list of strings, not one string; got {words!r}")
        self.refusal_words = tuple(refusal)
        self.affirmation_words = tuple(affirmation)
        self.variants = bool(variants)
        refusal_ids = opener_token_ids(tokenizer, self.refusal_words, variants=variants)
        affirmation_ids = opener_token_ids(tokenizer, self.affirmation_words, variants=variants)
        shared = set(refusal_ids) & set(affirmation_ids)
        self.refusal_ids = [i for i in refusal_ids if i not in shared]
        self.affirmation_ids = [i for i in affirmation_ids if i not in shared]
        for name, ids in (("refusal", self.refusal_ids), ("affirmation", self.affirmation_ids)):
            if not ids:
                raise ValueError(f"the {name} word list gives no token of its own with this tokenizer; "
                                 f"got {getattr(self, name + '_words')!r}")
        self._cache = DeviceCache()

    def _ids(self, which: str, scores: torch.Tensor) -> torch.Tensor:
        ids = self.refusal_ids if which == "refusal" else self.affirmation_ids

        def build() -> torch.Tensor:
            check_ids_in_range(f"{which} token ids", ids, scores.shape[-1])
            return torch.tensor(ids, dtype=torch.long)

        return self._cache.get(scores.device, None, (which, scores.shape[-1]), build)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """The gap per row, float32, shape ``scores.shape[:-1]``."""
        scores = numerics.as_float32(scores)
        refusal = scores.index_select(-1, self._ids("refusal", scores)).amax(dim=-1)
        affirmation = scores.index_select(-1, self._ids("affirmation", scores)).amax(dim=-1)
        return refusal - affirmation

    def affirmation_logprob(self, scores: torch.Tensor) -> torch.Tensor:
        """``log sum_{a in affirmation} p_a`` per row (float32); differentiable (the suffix
        optimizer takes its gradient). ``-inf`` for a fully masked row."""
        scores = numerics.as_float32(scores)
        # log P(A) = logsumexp(z_A) - logsumexp(z): two reductions, no [.., V] log-softmax.
        selected = numerics.logsumexp(scores.index_select(-1, self._ids("affirmation", scores)))
        total = numerics.logsumexp(scores)
        return torch.where(torch.isfinite(total), selected - total, torch.full_like(total, float("-inf")))

    def to_dict(self) -> dict:
        return {"refusal": list(self.refusal_words), "affirmation": list(self.affirmation_words),
                "variants": self.variants}

    @classmethod
    def from_dict(cls, tokenizer, data: dict) -> RefusalGap:
        return cls(tokenizer, data["refusal"], data["affirmation"], variants=data.get("variants", True))

    def __repr__(self) -> str:
        return (f"RefusalGap(refusal={len(self.refusal_ids)} tokens from {self.refusal_words!r}, "
                f"affirmation={len(self.affirmation_ids)} tokens from {self.affirmation_words!r})")
