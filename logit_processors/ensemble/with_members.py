"""The base of processors that run other models beside ``generate()``: tokenizer checks, the
common token range, the output layout, and the member models with their KV caches
(:class:`~logit_processors.runtime.members.CachedMembers` for members that share the primary's
tokenizer, :class:`~logit_processors.runtime.aligned_members.AlignedMember` for members with
another tokenizer, read on the same text).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import numerics
from ..core import Processor, check_scores
from ..numerics import NEG_INF
from ..runtime.aligned_members import AlignedMember
from ..runtime.members import CachedMembers, check_causal_lm
from ..runtime.text_codec import TextCodec
from ..runtime.vocabulary_map import VocabularyMap
from ..validate import NanPolicy, check_nan_policy, optional_token_id
from .combine import check_same_vocabulary, head_width, tokenizer_relation


class WithMemberModels(Processor):
    """Shared machinery: tokenizer checks, the common token range, the output layout, and the
    models that run alongside ``generate()`` (:class:`CachedMembers`).

    ``models``/``names``: every model the processor was given (checked); ``run``: the indices of
    those that take part, and so are run at each step.
    """

    def __init__(self, models: list, names: list[str], run: list[int], tokenizer, pad_token_id: int | None,
                 on_nan: NanPolicy = "raise", temperatures: list[float] | None = None,
                 primary_temperature: float = 1.0):
        self.on_nan = check_nan_policy(on_nan)
        pad_token_id = optional_token_id("pad_token_id", pad_token_id)
        for name, model in zip(names, models, strict=True):
            check_causal_lm(name, model)
        tokenizers = self._tokenizers(tokenizer, len(models) + 1)
        aligned = self._aligned_models(tokenizers, names)
        given = [(t, n) for k, (t, n) in enumerate(zip(tokenizers, ["the primary model", *names], strict=True))
                 if t is not None and k - 1 not in aligned]
        if len(given) > 1:
            check_same_vocabulary([t for t, _ in given], [n for _, n in given])
        #: Number of real tokens (LM-head columns beyond are masked); None: the narrowest width, per call.
        self.n_tokens = len(given[0][0]) if given else None
        if self.n_tokens is not None:
            for k, (name, model) in enumerate(zip(names, models, strict=True)):
                width = head_width(model)
                if k not in aligned and width is not None and width < self.n_tokens:
                    raise ValueError(
                        f"{name}'s LM head has {width} columns but the tokenizer has {self.n_tokens} tokens; "
                        "its ids cannot cover the shared vocabulary"
                    )
        if pad_token_id is None and given:
            pad_token_id = getattr(given[0][0], "pad_token_id", None)
        if pad_token_id is None and models:
            pad_token_id = getattr(getattr(models[0], "generation_config", None), "pad_token_id", None)
        self.pad_token_id = pad_token_id
        temperatures = temperatures or [1.0] * len(models)
        primary = TextCodec.of(tokenizers[0], "the primary model's tokenizer") if aligned else None
        #: The members read on text (another tokenizer), by index in ``models``.
        self._aligned = {
            k: AlignedMember(models[k], primary, member, temperature=temperatures[k], pad_token_id=pad_token_id,
                             vocabulary_map=VocabularyMap.of(primary, member))
            for k, member in aligned.items() if k in run
        }
        self._members = CachedMembers([models[i] for i in run if i not in aligned], pad_token_id=pad_token_id)
        self._names, self._run = list(names), list(run)
        self._primary_temperature = primary_temperature

    @staticmethod
    def _aligned_models(tokenizers: list, names: list[str]) -> dict[int, TextCodec]:
        """The members whose tokenizer differs from the primary's (by index in ``models``), with
        their codecs; a ValueError for one that can be aligned neither by id nor on text."""
        primary, aligned = tokenizers[0], {}
        if primary is None:  # nothing to align to: the given tokenizers must agree id by id
            return aligned
        for k, (member, name) in enumerate(zip(tokenizers[1:], names, strict=True)):
            if member is None or member is primary:
                continue
            if tokenizer_relation(primary, member, "the primary model", name) == "aligned":
                aligned[k] = TextCodec.of(member, f"{name}'s tokenizer")
        return aligned

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
        for member in self._aligned.values():
            member.reset()

    @property
    def counts(self) -> dict[str, int]:
        """How the member models' steps were served: ``prefill`` (whole sequences run), ``continue``
        (one new token per row), ``reorder`` (continuations that followed beams to new rows); with
        members of another tokenizer also ``fed`` and ``rolled_back`` (their tokens run, and undone
        where the text's re-encoding changed them)."""
        counts = dict(self._members.counts)
        for member in self._aligned.values():
            if not self._members.models:
                counts.update({k: member.counts[k] for k in ("prefill", "continue", "reorder")})
            for key in ("fed", "rolled_back"):
                counts[key] = counts.get(key, 0) + member.counts[key]
        return counts

    def set_attention_mask(self, attention_mask: torch.Tensor):
        """The prompt's attention mask for the next ``generate()`` call (``[prompts, prompt length]``),
        used instead of inferring left padding from ``pad_token_id``. Returns ``self``, so that
        ``logits_processor=[ensemble.set_attention_mask(inputs["attention_mask"])]`` is one step.
        Needed only when a prompt may begin with the pad token itself (e.g. GPT-2's BOS = EOS = pad)."""
        self._members.set_attention_mask(attention_mask)
        for member in self._aligned.values():
            member.set_attention_mask(attention_mask)
        return self

    def _is_aligned(self, k: int) -> bool:
        """Whether model ``k`` (index in ``models``) is read on text; its output is then log-probs
        over the primary's tokens, with its temperature already applied."""
        return k in self._aligned

    def _member_logits(self, input_ids: torch.Tensor, scores: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """The running models' logits (log-probs for members read on text) cut to the common token
        range, in the order of ``run``, and that range's width."""
        cached = iter(self._members.next_token_logits(input_ids) if self._members.models else [])
        primary = None
        if self._aligned:  # the primary's distribution splits what a member cannot tell apart
            n = min(self.n_tokens, scores.shape[-1])
            primary = numerics.log_softmax(numerics.shifted_by_temperature(scores[:, :n], self._primary_temperature))
        logits = [self._aligned[k].next_token_log_probs(input_ids, primary) if k in self._aligned else next(cached)
                  for k in self._run]
        if self.on_nan == "raise":  # the members' logits obey the input policy too (an fp16 member may overflow)
            for k, member_logits in zip(self._run, logits, strict=True):
                if k not in self._aligned:
                    check_scores(f"{type(self).__name__}: {self._names[k]}'s logits", member_logits)
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
