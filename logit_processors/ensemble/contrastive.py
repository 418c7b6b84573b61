"""``ContrastiveDecoding``: expert minus amateur, over the expert's plausible tokens."""

from __future__ import annotations

import math

import torch

from .. import numerics
from ..numerics import NEG_INF
from ..validate import NanPolicy, finite_float, probability
from .combine import temperature_value
from .with_members import WithMemberModels


class ContrastiveDecoding(WithMemberModels):
    """Expert minus amateur: ``log p_expert - alpha * log p_amateur`` over the plausible tokens.

    Li et al. (2023), "Contrastive Decoding: Open-ended Text Generation as Optimization" (ACL;
    arXiv 2022): where a large *expert* and a small *amateur* agree, the token is generic (the
    amateur's favourite failure modes: repetition, bland continuations); where the expert is much
    surer than the amateur, it is the expert's knowledge. The score rewards the difference,
    restricted to the *plausible* head ``{x : p_expert(x) >= plausibility * max p_expert}`` (the
    paper's alpha; others get ``-inf``), so that tokens unlikely for both cannot win on a ratio
    of two tiny numbers.

    The primary model is the expert (its scores arrive through ``generate()``); ``amateur`` is
    run alongside with its own KV cache, like :class:`~logit_processors.LogOddsEnsemble`'s members. ``alpha``
    weighs the amateur (1 in the paper; O'Brien & Lewis, 2023, tune it), and
    ``amateur_temperature`` softens or sharpens it first (the paper uses 0.5 to 1.5). The output
    is the contrastive score itself, not renormalized: beam search then maximizes the paper's
    objective, the sum of the token scores. Greedy and sampling are unaffected by the shift.

    Example:
        >>> from logit_processors import ContrastiveDecoding
        >>> from logit_processors.models import load_tiny_gpt2
        >>> expert, tokenizer = load_tiny_gpt2()
        >>> amateur, _ = load_tiny_gpt2(seed=1)     # same tokenizer; in practice a smaller model
        >>> cd = ContrastiveDecoding(amateur, alpha=1.0, plausibility=0.1, tokenizer=tokenizer)
        >>> inputs = tokenizer(["The with statement"], return_tensors="pt")
        >>> out = expert.generate(**inputs, logits_processor=[cd], do_sample=False, max_new_tokens=8)
        >>> out.shape
        torch.Size([1, 11])
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
        on_nan: NanPolicy = "raise",
    ):
        self.alpha = finite_float("alpha", alpha, minimum=0.0, why="the amateur's weight")
        self.plausibility = probability("plausibility", plausibility)
        self.amateur_temperature = temperature_value("amateur_temperature", amateur_temperature)
        self._log_plausibility = math.log(self.plausibility) if self.plausibility > 0 else NEG_INF
        super().__init__([amateur], ["the amateur"], [0], tokenizer, pad_token_id, on_nan,
                         temperatures=[self.amateur_temperature])

    def _repr_fields(self) -> dict[str, object]:
        return {"alpha": self.alpha, "plausibility": self.plausibility, "amateur_temperature": self.amateur_temperature}

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        [amateur], width = self._member_logits(input_ids, scores)
        expert = numerics.log_softmax(scores[:, :width])
        if not self._is_aligned(0):  # an amateur read on text comes as log-probs, its temperature applied
            amateur = numerics.log_softmax(numerics.shifted_by_temperature(amateur, self.amateur_temperature))
        score = numerics.masked_weighted_sum([expert, amateur], [1.0, -self.alpha])
        implausible = expert < expert.amax(dim=-1, keepdim=True) + self._log_plausibility
        return self._finish(type(self).__name__, scores, score.masked_fill_(implausible, NEG_INF), width)
