"""The base of processors that run other models beside ``generate()``: tokenizer checks, the
common token range, the output layout, and the member models with their KV caches
(:class:`~logit_processors.runtime.members.CachedMembers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import numerics
from ..core import Processor, check_scores
from ..numerics import NEG_INF
from ..runtime.members import CachedMembers, check_causal_lm
from ..validate import NanPolicy, check_nan_policy, optional_token_id
from .combine import check_same_vocabulary, head_width


class WithMemberModels(Processor):
    """Shared machinery: tokenizer checks, the common token range, the output layout, and the
    models that run alongside ``generate()`` (:class:`CachedMembers`).

    ``models``/``names``: every model the processor was given (checked); ``run``: the indices of
    those that take part, and so are run at each step.
    """

    def __init__(self, models: list, names: list[str], run: list[int], tokenizer, pad_token_id: int | None,
                 on_nan: NanPolicy = "raise"):
        self.on_nan = check_nan_policy(on_nan)
        pad_token_id = optional_token_id("pad_token_id", pad_token_id)
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
                width = head_width(model)
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
        self._names, self._run = list(names), list(run)

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
        if self.on_nan == "raise":  # the members' logits obey the input policy too (an fp16 member may overflow)
            for name, member_logits in zip((self._names[i] for i in self._run), logits, strict=True):
                check_scores(f"{type(self).__name__}: {name}'s logits", member_logits)
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
