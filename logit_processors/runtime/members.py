"""Causal LMs run in step with ``generate()``: one KV cache per model, kept consistent with ``input_ids``.

An ensemble processor is called once per generation step with ``input_ids [B, T]`` (every row's
whole history) and the primary model's scores. Its member models need their own next-token
logits for exactly those histories. Rerunning every member on the whole prefix costs
``O(T)`` per step (``O(T^2)`` per generation); :class:`CachedMembers` keeps one key/value cache per
model and feeds it only the token each row gained since the last call, in one batched forward
pass per model.

The state is derived from ``input_ids`` on every call, never from call order (compare vLLM's
explicit ``update_state(batch_update)``; here the batch update is *inferred*):

* **continuation** (the hot path): ``input_ids`` is one column longer than the histories the caches
  hold, and every row's history minus its last token is one of the cached rows. That row is its
  *parent*. Greedy search and sampling keep each row's parent at the same index; beam search
  reorders rows between steps, and the caches are reordered to match (``index_select`` over the
  batch axis, ``Cache.reorder_cache``), exactly as ``generate()`` reorders the primary's.
* **anything else** starts over: the whole ``input_ids`` is run through each model once (a
  *prefill*). That covers a new ``generate()`` call, a changed batch size,
  ``num_return_sequences`` (``generate()`` expands the prompts before the first step) and a
  history that no cached row explains. Prefilling is always correct, only slower: the caches
  are a pure function of the token histories and their attention masks. Identical rows (a prompt
  expanded for ``num_return_sequences`` or beams) are computed once and copied.

Padding: members must see the attention mask and position ids the primary sees. By default the
*leading* run of ``pad_token_id`` in each row of the first call is taken as left padding (what a
tokenizer with ``padding_side="left"`` produces and what ``generate()`` expects), except the last
prompt column, which is always a real token (so a prompt that is just ``<|endoftext|>`` works).
Position ids follow ``generate()``: ``cumsum(mask) - 1`` over the prompt, then one more per step.
When a prompt may genuinely begin with the pad token (e.g. GPT-2's ``<|endoftext|>`` used as BOS
with pad = EOS), give the mask explicitly with :meth:`CachedMembers.set_attention_mask` before
the ``generate()`` call; it applies to that call's prompt.

Not supported, with a ``ValueError`` at the first call: assisted (speculative) and prompt-lookup
decoding. They call the processors with a draft model's scores and score several candidate
positions per pass; the members would be combined with the wrong model's distribution. Also
refused: a prompt given only as ``inputs_embeds`` (processors then see no prompt token ids).

Example:
    >>> import torch
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> members = CachedMembers([model], pad_token_id=tokenizer.pad_token_id)
    >>> ids = tokenizer(["The if statement"], return_tensors="pt")["input_ids"]
    >>> [logits] = members.next_token_logits(ids)            # prefill
    >>> ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    >>> [logits] = members.next_token_logits(ids)            # one new token
    >>> members.counts["prefill"], members.counts["continue"]
    (1, 1)
    >>> with torch.inference_mode():                         # the same as a full forward pass
    ...     full = model(ids).logits[:, -1]
    >>> bool(torch.allclose(logits, full, atol=5e-5))   # two forward paths: a few float32 ulps apart
    True
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from ..core import host_reads_are_free
from ..validate import describe, optional_token_id, per_row
from .model_inputs import accepts_argument, cache_kwarg, model_device, new_cache

# generate()'s speculative loop; processors called from inside it see a draft model's scores.
_ASSISTED_FRAMES = frozenset({"_assisted_decoding", "assisted_decoding"})


class CachedMembers:
    """Next-token logits of several causal LMs for the histories in ``input_ids``, incrementally.

    ``models``: Hugging Face causal LMs (decoder-only, with a KV cache). ``pad_token_id``: the
    token whose leading run marks left padding (``None``: no padding inference).
    :meth:`next_token_logits` returns one ``[B, V_k]`` tensor per model, on the ``input_ids``
    device, in the model's dtype. :meth:`reset` frees the caches.

    ``counts`` tells how each call was served (``prefill``, ``continue``, and ``reorder`` for the
    continuations that moved rows): a generation should show one prefill, then continuations.
    """

    def __init__(self, models: Sequence[torch.nn.Module], pad_token_id: int | None = None):
        self.models = list(models)
        for i, model in enumerate(self.models):
            check_causal_lm(f"model #{i}", model)
        self.pad_token_id = optional_token_id("pad_token_id", pad_token_id)
        # The ids each model can embed: input_ids beyond them are refused with a clear error.
        self._vocab_sizes = [embedding_rows(model) for model in self.models]
        self._forward_kwargs = [_forward_kwargs(model) for model in self.models]
        self._pending_mask: torch.Tensor | None = None
        self.counts = {"prefill": 0, "continue": 0, "reorder": 0}
        self.reset()

    def reset(self) -> None:
        """Forget the cached histories (and free the caches); the next call prefills."""
        self._history: torch.Tensor | None = None  # [B, L]: the tokens the caches hold
        self._mask: torch.Tensor | None = None  # [B, L] attention mask of those tokens
        self._next_position: torch.Tensor | None = None  # [B, 1]: position id of each row's next token
        self._padded = False  # whether any prompt had padding (else no mask is passed, like generate())
        self._caches: list = []

    def set_attention_mask(self, attention_mask: torch.Tensor) -> None:
        """Use this prompt mask (``[prompts, prompt length]``, as given to ``generate()``) at the next
        prefill instead of inferring padding; rows are expanded as ``generate()`` expands prompts."""
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
            raise ValueError(
                f"attention_mask must be a [prompts, prompt length] tensor of 0/1; got {describe(attention_mask)}"
            )
        self._pending_mask = attention_mask.detach().long()

    # -- the one entry point -------------------------------------------------------------------

    def next_token_logits(self, input_ids: torch.LongTensor) -> list[torch.Tensor]:
        """Each model's logits for the token after every row of ``input_ids [B, T]``."""
        with torch.inference_mode():
            try:
                parents = self._parents(input_ids)
                if parents is None:
                    self._check_ids(input_ids)
                    return self._prefill(input_ids)
                if host_reads_are_free(input_ids.device):  # elsewhere the read would sync at every step
                    self._check_ids(input_ids[:, -1:])
                return self._continue(input_ids, parents)
            except BaseException:
                self.reset()  # a step that failed half way must not leave caches out of step
                raise

    def _check_ids(self, ids: torch.Tensor) -> None:
        """A ValueError naming the model when ``ids`` hold a token id it cannot embed (one [B, T]
        min/max read; without it the model fails deep inside its embedding)."""
        if not ids.numel():
            return
        low, high = int(ids.min()), int(ids.max())
        for i, size in enumerate(self._vocab_sizes):
            if low < 0 or (size is not None and high >= size):
                bad = low if low < 0 else high
                allowed = f"0..{size - 1}" if size is not None else ">= 0"
                raise ValueError(f"input_ids holds token id {bad}, which model #{i} cannot embed (allowed: {allowed})")

    # -- row tracking --------------------------------------------------------------------------

    def _parents(self, input_ids: torch.Tensor) -> torch.Tensor | None | bool:
        if self._pending_mask is not None:
            return None
        return continued_rows(self._history, input_ids)

    # -- running the models --------------------------------------------------------------------

    def _prefill(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        refuse_assisted_generation()
        if input_ids.shape[1] == 0:
            raise ValueError(
                "ensemble processors got input_ids with no tokens (generate(inputs_embeds=...) without input_ids "
                "hands processors only the new tokens): the member models need the prompt's token ids. Pass "
                "input_ids to generate() (with inputs_embeds, if needed)"
            )
        self.reset()
        self.counts["prefill"] += 1
        mask = self._prompt_mask(input_ids)
        self._padded = not bool(mask.all())
        # Rows that are copies of one prompt (num_return_sequences, beams) are computed once, then
        # copied out to every row that has them (an index_select of the fresh caches).
        distinct, copies = torch.unique(torch.cat([input_ids, mask], dim=1), dim=0, return_inverse=True)
        ids, ids_mask = distinct.split(input_ids.shape[1], dim=1)
        logits = []
        for model, kwargs in zip(self.models, self._forward_kwargs, strict=True):
            cache = new_cache(model)
            out = _run(model, kwargs, ids, ids_mask if self._padded else None, _positions(ids_mask), cache, logits_to_keep=1)
            cache.reorder_cache(copies.to(model_device(model)))
            self._caches.append(cache)
            logits.append(out.to(input_ids.device)[copies])
        self._history = input_ids.clone()  # never aliased: generate() may reuse its buffer
        self._mask = mask
        self._next_position = _positions(mask)[:, -1:] + 1
        return logits

    def _continue(self, input_ids: torch.Tensor, parents: torch.Tensor | bool) -> list[torch.Tensor]:
        self.counts["continue"] += 1
        if parents is not True:  # beam search moved rows: follow them
            self.counts["reorder"] += 1
            for model, cache in zip(self.models, self._caches, strict=True):
                cache.reorder_cache(parents.to(model_device(model)))
            self._mask = self._mask.index_select(0, parents)
            self._next_position = self._next_position.index_select(0, parents)
        self._mask = torch.cat([self._mask, self._mask.new_ones(self._mask.shape[0], 1)], dim=1)
        new_tokens = input_ids[:, -1:]
        logits = [
            _run(model, kwargs, new_tokens, self._mask if self._padded else None, self._next_position, cache).to(
                input_ids.device
            )
            for model, kwargs, cache in zip(self.models, self._forward_kwargs, self._caches, strict=True)
        ]
        self._next_position = self._next_position + 1
        self._history = input_ids.clone()
        return logits

    def _prompt_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask, self._pending_mask = self._pending_mask, None
        return prompt_mask(input_ids, self.pad_token_id, mask)


# --------------------------------------------------------------------------------------------
# Helpers


def continued_rows(history: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor | None | bool:
    """Which row of ``history [B', L]`` each row of ``input_ids [B, L + 1]`` continues: ``True`` for
    "each its own" (greedy, sampling), a ``[B]`` index tensor (beam search moved rows), or ``None``
    when the histories do not continue ``history`` (a new call, another batch: start over)."""
    if history is None or input_ids.shape[1] != history.shape[1] + 1 or input_ids.device != history.device:
        return None
    prefix = input_ids[:, :-1]
    if prefix.shape == history.shape and torch.equal(prefix, history):
        return True
    # [B, B_cached]: row r's history minus its last token equals cached row p. Rows with equal
    # histories have equal caches, so any match will do.
    match = (prefix[:, None, :] == history[None, :, :]).all(dim=-1)
    if not bool(match.any(dim=-1).all()):
        return None
    return match.int().argmax(dim=-1)


def prompt_mask(input_ids: torch.Tensor, pad_token_id: int | None, given: torch.Tensor | None = None) -> torch.Tensor:
    """The prompt's attention mask ``[B, T]``: ``given`` (``[prompts, T]``, expanded to the rows as
    ``generate()`` expands prompts), else the leading run of ``pad_token_id`` in each row is
    padding, never including the last column (a real token)."""
    rows, width = input_ids.shape
    if given is not None:
        if given.shape[1] != width:
            raise ValueError(
                f"the attention_mask given with set_attention_mask() has {given.shape[1]} columns but the prompt "
                f"generate() passed has {width}; give the mask of this call's prompt"
            )
        return per_row("attention_mask", given.to(input_ids.device), rows)
    if pad_token_id is None or width < 2:
        return torch.ones_like(input_ids)
    leading = (input_ids[:, :-1] == pad_token_id).long().cumprod(dim=-1)
    return torch.cat([1 - leading, torch.ones_like(input_ids[:, -1:])], dim=1)


def embedding_rows(model: torch.nn.Module) -> int | None:
    """How many token ids ``model``'s input embedding holds (None when it does not say)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def check_causal_lm(name: str, model: object) -> None:
    """TypeError/ValueError naming ``name`` unless ``model`` looks like a decoder-only HF LM."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        raise TypeError(
            f"{name} must be a Hugging Face causal LM (a torch.nn.Module with a .config, e.g. from "
            f"AutoModelForCausalLM.from_pretrained); got {type(model).__name__}"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model ({type(model).__name__}); members must be decoder-only")


def refuse_assisted_generation() -> None:
    """ValueError when called from inside ``generate()``'s assisted (speculative) decoding loop."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in _ASSISTED_FRAMES:
            raise ValueError(
                "ensemble processors do not support assisted generation (assistant_model=, "
                "prompt_lookup_num_tokens=): it calls logits processors with the draft model's scores and "
                "verifies several positions per pass. Generate without an assistant"
            )
        frame = frame.f_back


def _forward_kwargs(model: torch.nn.Module) -> dict[str, object]:
    """How to call this model: the cache argument's name, and whether it takes ``position_ids`` /
    ``logits_to_keep``."""
    return {
        "cache_name": cache_kwarg(model),
        "positions": accepts_argument(model, "position_ids"),
        "logits_to_keep": accepts_argument(model, "logits_to_keep"),
    }


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from an attention mask, as ``generate()`` builds them (padding gets 0)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _run(model, kwargs, ids, mask, positions, cache, logits_to_keep: int = 0) -> torch.Tensor:
    """One forward pass over ``ids`` (appended to ``cache``); the last position's logits ``[B, V]``."""
    device = model_device(model)
    inputs = {"input_ids": ids.to(device), kwargs["cache_name"]: cache, "use_cache": True}
    if mask is not None:
        inputs["attention_mask"] = mask.to(device)
    if kwargs["positions"]:
        inputs["position_ids"] = positions.to(device)
    if logits_to_keep and kwargs["logits_to_keep"]:
        inputs["logits_to_keep"] = logits_to_keep  # a prefill needs the last position only, not [B, T, V]
    return model(**inputs).logits[:, -1, :]
