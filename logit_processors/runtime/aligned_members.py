"""A member model with *another tokenizer*, run in step with ``generate()`` on the primary's text.

The primary model generates token ids of its own vocabulary; the member reads the same text in
its own tokens. At every step :class:`AlignedMember` turns each row of ``input_ids`` into text
(the bytes of the primary's tokens; special tokens such as chat markers spell nothing), encodes
that text canonically with the member's tokenizer after the member's start token, and returns
the member's distribution over the *primary's* vocabulary (:func:`member_distribution`).

**What is computed.** Let the member's tokens of the text be ``s, m_1 .. m_n`` (``s`` its start
token) and ``r`` the bytes of ``m_n`` (plus any bytes of an unfinished UTF-8 character the
primary has written). The member's probability of the primary's next token ``t`` is

    p(t) ∝ q0(m_n) * sum_{m -> t} q1(m)  +  sum_{m extends r, rest -> t} q0(m)

where ``q1`` is the member's next-token distribution after ``m_n``, ``q0`` the one before it,
``m -> t`` means the primary's canonical encoding of ``m``'s text starts with ``t``, and the second
sum runs over the member tokens whose text strictly extends ``r`` (the rest of each mapped the
same way): the member may well write the text so far with a longer last token (``"▁cats"``
rather than ``"▁cat"`` + ``"s"``). It is exact for those two ways of going on (the canonical
tokens so far then one more token, or the tokens before ``m_n`` then one token covering ``r`` and
more); paths through other tokenizations of the text are left out (models trained on canonical
tokenizations give them little mass). See :mod:`logit_processors.runtime.vocabulary_map`.

**KV cache.** Each row's cache holds the member's tokens of its text. At the next step the text
is re-encoded; the tokens that stay are kept, the last ones that changed (usually none, or only
the last: ``"▁cat"`` becomes ``"▁cats"``) are rolled back, and only the new tokens are run, so a
step costs one member token per row, not the whole prefix. Rows need different roll-backs and
gain different numbers of tokens, so the cache is one batch with *holes*: a rolled-back slot
stays in the cache but no query attends to it again, and an explicit 4-D attention mask built
from each slot's position (sliding-window layers, as in Gemma 3, included) makes every row
attend exactly to its own live tokens at their own positions, what a fresh forward pass over
the row's tokens computes. Beam search reorders the cache like :mod:`.members` does.

Example:
    >>> import torch
    >>> from logit_processors.models import load_tiny_gpt2
    >>> from logit_processors.runtime.text_codec import TextCodec
    >>> model, tokenizer = load_tiny_gpt2()
    >>> codec = TextCodec(tokenizer)
    >>> member = AlignedMember(model, codec, codec)          # (a tokenizer against itself)
    >>> ids = tokenizer(["The if statement"], return_tensors="pt")["input_ids"]
    >>> log_p = torch.log_softmax(model(ids).logits[:, -1, :2000], dim=-1)
    >>> member.next_token_log_probs(ids, log_p).shape
    torch.Size([1, 2000])
"""

from __future__ import annotations

import math

import torch

from ..validate import describe
from .members import check_causal_lm, continued_rows, prompt_mask, refuse_assisted_generation
from .model_inputs import accepts_argument, cache_kwarg, check_length, model_device, new_cache
from .text_codec import TextCodec
from .vocabulary_map import VocabularyMap


class AlignedMember:
    """``model`` (a causal LM whose tokenizer is ``member``) read on the text of the primary's rows.

    ``primary``/``member``: :class:`TextCodec` of the two tokenizers; ``temperature`` divides the
    member's logits; ``pad_token_id``: the primary's token whose leading run in a prompt is left
    padding. :meth:`next_token_log_probs` gives ``[B, len(primary)]`` float32 log-probabilities.
    ``counts``: ``prefill``/``continue``/``reorder`` calls, and member tokens ``fed`` and ``rolled_back``.
    """

    def __init__(self, model, primary: TextCodec, member: TextCodec, *, temperature: float = 1.0,
                 pad_token_id: int | None = None, vocabulary_map: VocabularyMap | None = None):
        check_causal_lm("the member", model)
        self.model, self.primary, self.member = model, primary, member
        self.map = vocabulary_map if vocabulary_map is not None else VocabularyMap(primary, member)
        self.temperature = float(temperature)
        self.pad_token_id = pad_token_id
        self.masks = AttentionLayout(model)
        self._cache_name = cache_kwarg(model)
        self._keep = accepts_argument(model, "logits_to_keep")
        self._pending_mask: torch.Tensor | None = None
        self.counts = {"prefill": 0, "continue": 0, "reorder": 0, "fed": 0, "rolled_back": 0}
        self.reset()

    def reset(self) -> None:
        """Forget every row (and free the cache); the next call starts over."""
        self._history: torch.Tensor | None = None  # [B, T]: the primary ids of the rows
        self._texts: list[bytes] = []
        self._ids: list[list[int]] = []  # the member tokens in the cache, per row
        self._slots: list[list[int]] = []  # the cache slot of each of them
        self._positions: torch.Tensor | None = None  # [B, slots]: each slot's position, -1 for a hole
        self._cache = None
        self._q0: torch.Tensor | None = None  # [B, V_member] log-probs before each row's last token
        self._q1: torch.Tensor | None = None  # [B, V_member] log-probs after it

    def set_attention_mask(self, attention_mask: torch.Tensor) -> None:
        """The next prompt's attention mask (``[prompts, prompt length]``), instead of inferring padding."""
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
            raise ValueError(
                f"attention_mask must be a [prompts, prompt length] tensor of 0/1; got {describe(attention_mask)}"
            )
        self._pending_mask = attention_mask.detach().long()

    def next_token_log_probs(self, input_ids: torch.LongTensor, primary_log_probs: torch.Tensor) -> torch.Tensor:
        """The member's log-probabilities of the primary's next token, ``[B, len(primary)]`` float32;
        ``primary_log_probs [B, >= len(primary)]``: the primary's at this step (they split a member
        token's mass among the primary tokens it cannot tell apart)."""
        with torch.inference_mode():
            try:
                parents = None if self._pending_mask is not None else continued_rows(self._history, input_ids)
                if parents is None:
                    self._start(input_ids)
                else:
                    self._follow(input_ids, parents)
                self._history = input_ids.clone()
                return self._distribution(primary_log_probs.detach().cpu()).to(input_ids.device)
            except BaseException:
                self.reset()  # a step that failed half way must not leave the cache out of step
                raise

    # -- rows and their texts ------------------------------------------------------------------

    def _start(self, input_ids: torch.Tensor) -> None:
        refuse_assisted_generation()
        if input_ids.shape[1] == 0:
            raise ValueError("ensemble processors got input_ids with no tokens (generate(inputs_embeds=...)): "
                             "the member models need the prompt's token ids")
        self.reset()
        self.counts["prefill"] += 1
        mask, self._pending_mask = prompt_mask(input_ids, self.pad_token_id, self._pending_mask), None
        rows = input_ids.cpu().tolist()
        masks = mask.cpu().tolist()
        self._texts = [self._spell([i for i, keep in zip(row, m) if keep]) for row, m in zip(rows, masks, strict=True)]
        self._ids = [[] for _ in rows]
        self._slots = [[] for _ in rows]
        self._positions = torch.zeros(len(rows), 0, dtype=torch.long)
        self._cache = new_plain_cache()
        self._q0 = self._q1 = None  # [B, LM-head width], from the first forward pass
        self._advance()

    def _follow(self, input_ids: torch.Tensor, parents) -> None:
        self.counts["continue"] += 1
        if parents is not True:  # beam search moved rows: follow them
            self.counts["reorder"] += 1
            order = parents.cpu()
            self._cache.reorder_cache(order.to(model_device(self.model)))
            index = order.tolist()
            self._texts = [self._texts[i] for i in index]
            self._ids = [list(self._ids[i]) for i in index]
            self._slots = [list(self._slots[i]) for i in index]
            self._positions = self._positions.index_select(0, order)
            self._q0, self._q1 = self._q0.index_select(0, order), self._q1.index_select(0, order)
        for row, token in enumerate(input_ids[:, -1].cpu().tolist()):
            self._texts[row] += self._spell([token])
        self._advance()

    def _spell(self, ids: list[int]) -> bytes:
        if ids and (min(ids) < 0 or max(ids) >= len(self.primary)):
            bad = next(i for i in ids if i < 0 or i >= len(self.primary))
            raise ValueError(f"input_ids holds token id {bad}, which the primary's tokenizer does not have "
                             f"(allowed: 0..{len(self.primary) - 1})")
        return self.primary.text_of(ids)

    # -- the member's tokens and cache ---------------------------------------------------------

    def _advance(self) -> None:
        """Re-encode every row's text; roll back the tokens that changed and run the new ones."""
        start = self.member.start_ids
        targets = [start + self.member.encode(split_unfinished_character(text)[0]) for text in self._texts]
        plans = []
        for row, (old, new) in enumerate(zip(self._ids, targets, strict=True)):
            keep = _common_prefix(old, new)
            q0_from = None
            if len(new) - keep == 1:  # one new token: the distribution before it is one we hold
                q0_from = "q1" if keep == len(old) else "q0" if keep == len(old) - 1 else None
                if q0_from is None:
                    keep -= 1  # run the token before it again, for its distribution
            plans.append((keep, q0_from))
        width = max(len(new) - keep for new, (keep, _) in zip(targets, plans, strict=True))
        for row, (keep, _) in enumerate(plans):
            rolled = self._slots[row][keep:]
            if rolled:
                self._positions[row, rolled] = -1
                self.counts["rolled_back"] += len(rolled)
        if width == 0:
            return
        rows, start = len(targets), self._positions.shape[1]
        ids = torch.zeros(rows, width, dtype=torch.long)
        positions = torch.full((rows, width), -1, dtype=torch.long)
        for row, (new, (keep, _)) in enumerate(zip(targets, plans, strict=True)):
            fresh = new[keep:]
            if fresh:
                check_length(self.model, len(new), what="the member's encoding of the text")
                ids[row, width - len(fresh):] = torch.tensor(fresh)
                positions[row, width - len(fresh):] = torch.arange(keep, len(new))
            self._ids[row] = new
            self._slots[row] = self._slots[row][:keep] + list(range(start + width - len(fresh), start + width))
            self.counts["fed"] += len(fresh)
        self._positions = torch.cat([self._positions, positions], dim=1)
        logits = self._run(ids, positions)
        if self._q0 is None:
            self._q0 = torch.zeros(rows, logits.shape[-1])
            self._q1 = torch.zeros(rows, logits.shape[-1])
        last = torch.log_softmax(logits[:, -1].float() / self.temperature, dim=-1)
        before = torch.log_softmax(logits[:, -2].float() / self.temperature, dim=-1) if logits.shape[1] > 1 else None
        for row, (new, (keep, q0_from)) in enumerate(zip(targets, plans, strict=True)):
            gained = len(new) - keep
            if gained == 0:
                continue
            if gained >= 2:
                self._q0[row] = before[row]
            elif q0_from == "q1":
                self._q0[row] = self._q1[row]
            # q0_from == "q0": the token before is the same, and so is the distribution before it
            self._q1[row] = last[row]

    def _run(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        query_positions = positions.clamp_min(0)
        mask = self.masks.build(self._positions, positions, dtype=_float_dtype(self.model))
        inputs = {"input_ids": ids.to(device), "position_ids": query_positions.to(device), "use_cache": True,
                  "attention_mask": _to(mask, device), self._cache_name: self._cache}
        if self._keep:
            inputs["logits_to_keep"] = min(2, ids.shape[1])
        return self.model(**inputs).logits.cpu()

    # -- the distribution over the primary's vocabulary -----------------------------------------

    def _distribution(self, primary_log_probs: torch.Tensor) -> torch.Tensor:
        rows = []
        for row, (text, ids) in enumerate(zip(self._texts, self._ids, strict=True)):
            pending = split_unfinished_character(text)[1]
            tail = ids[-1] if len(ids) > len(self.member.start_ids) else None
            rows.append(member_distribution(self.map, self._q0[row], self._q1[row], tail, pending,
                                            primary_log_probs[row]))
        return torch.stack(rows)


def member_distribution(vmap: VocabularyMap, q0: torch.Tensor, q1: torch.Tensor, tail: int | None,
                        pending: bytes, primary_log_probs: torch.Tensor) -> torch.Tensor:
    """The member's log-probabilities ``[len(primary)]`` of the primary's next token (module docstring).

    ``q1``: the member's log-probs after its last token ``tail``; ``q0``: before it (unused when
    ``tail`` is None: no token of text yet); ``pending``: bytes of an unfinished character after
    the text; ``primary_log_probs``: the primary's, which split a member token's mass among the
    primary tokens it cannot tell apart (:mod:`.vocabulary_map`).
    """
    size = len(vmap.primary)
    q0, q1 = q0[: len(vmap.member)], q1[: len(vmap.member)]  # padded LM-head columns are no tokens
    log_p = primary_log_probs[:size].float()
    head = q0[tail] if tail is not None else 0.0
    table = vmap.extensions(pending) if pending else vmap.pairs
    values, targets = table.log_mass(head + q1, log_p)
    if tail is not None:
        more, more_targets = vmap.extensions(vmap.member.pieces[tail] + pending).log_mass(q0, log_p)
        values, targets = torch.cat([values, more]), torch.cat([targets, more_targets])
    top = values.max() if values.numel() else torch.tensor(-math.inf)
    if not bool(torch.isfinite(top)):
        return torch.full((size,), -math.log(size))  # the member has no opinion here: uniform
    mass = torch.zeros(size).index_add_(0, targets, (values - top).exp())
    total = mass.sum().log()
    return mass.log_().sub_(total)


class AttentionLayout:
    """4-D attention masks for a cache with holes: which slot each query attends to, per layer type."""

    def __init__(self, model):
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
            if unknown:
                raise ValueError(f"the member's layers include {unknown}; only full and sliding-window attention "
                                 "layers can run on text aligned across tokenizers")
            self.windows = {kind: (window if kind == "sliding_attention" else None) for kind in set(layer_types)}
        else:
            uses_window = window is not None and getattr(config, "use_sliding_window", True)
            self.windows = {None: window if uses_window else None}

    def build(self, slot_positions: torch.Tensor, query_positions: torch.Tensor, *, dtype: torch.dtype):
        """Masks for queries at ``query_positions [B, Q]`` (-1: a hole) over the cache's slots
        ``slot_positions [B, S]`` (the queries' own slots are the last Q)."""
        keys = slot_positions[:, None, :]  # [B, 1, S]
        queries = query_positions[:, :, None]  # [B, Q, 1]
        visible = (keys >= 0) & (keys <= queries)
        own = torch.zeros_like(visible)
        q = query_positions.shape[1]
        own[:, :, -q:] = torch.eye(q, dtype=torch.bool)  # a hole attends to itself only: no empty softmax
        hole = (query_positions < 0)[:, :, None]
        masks = {}
        for kind, window in self.windows.items():
            allowed = visible & (queries - keys < window) if window else visible
            allowed = torch.where(hole, own, allowed)
            additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
            masks[kind] = additive[:, None]  # [B, 1, queries, slots]
        return masks[None] if None in masks else masks


def new_plain_cache():
    """A ``DynamicCache`` whose layers all keep every slot (a sliding window is applied by the mask)."""
    from transformers import DynamicCache

    return DynamicCache()


def split_unfinished_character(text: bytes) -> tuple[str, bytes]:
    """``text`` as ``(the text before an unfinished UTF-8 character at its end, that character's
    bytes so far)``. Bytes that cannot be UTF-8 elsewhere (a primary may generate any byte
    sequence) are read as U+FFFD, as ``bytes.decode(errors="replace")`` reads them.

    Example:
        >>> split_unfinished_character("日本".encode() + b"\\xe8\\xaa")
        ('日本', b'\\xe8\\xaa')
    """
    cut = len(text)
    for back in range(1, min(4, len(text)) + 1):
        byte = text[-back]
        if byte & 0xC0 != 0x80:  # the last byte that is not a continuation byte
            needed = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            if needed > back:
                cut = len(text) - back
            break
    return text[:cut].decode("utf-8", errors="replace"), text[cut:]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _float_dtype(model) -> torch.dtype:
    dtype = getattr(model, "dtype", torch.float32)
    return dtype if dtype.is_floating_point else torch.float32


def _to(mask, device):
    return {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
