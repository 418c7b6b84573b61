"""A prompt as the model sees it: chat template applied, and where the user's text is inside it.

A detector looks at the *user's* text, not at the chat template around it (the template tokens
are the same for every request); generation needs the very ids ``apply_chat_template`` gives.
:func:`encode_prompt` serves both: an :class:`EncodedPrompt` holds the ``input_ids`` and the
``scored`` token range ``[start, end)`` of the user's content.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> _, tokenizer = load_tiny_gpt2()
    >>> encoded = encode_prompt(tokenizer, "The with statement", chat_template=False)
    >>> len(encoded), encoded.scored                  # no chat template: every token but the first
    (3, (1, 3))
    >>> encoded.tokens_in_content_chars(4)            # the tokens of "with statement"
    (1, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Message = dict  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt as token ids, with the token range of the user's content.

    ``text`` is the rendered prompt (chat template applied, or the raw text), ``content`` the
    user's text inside it starting at character ``content_char``; ``offsets[i]`` is the
    character range of token ``i`` in ``text`` (``None`` when the tokenizer gives none).
    ``scored = (start, end)`` are the tokens a detector looks at: those overlapping the content,
    never token 0 (nothing predicts it).
    """

    input_ids: tuple[int, ...]
    scored: tuple[int, int]
    text: str
    content: str
    content_char: int
    offsets: tuple[tuple[int, int], ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def tokens_in_content_chars(self, start: int, end: int | None = None) -> tuple[int, int]:
        """Token range ``[a, b)`` (within ``scored``) of the tokens overlapping characters
        ``[start, end)`` of :attr:`content`, e.g. an appended suffix. Needs offsets."""
        if self.offsets is None:
            raise ValueError("this tokenizer gives no character offsets; cannot map characters to tokens")
        end = len(self.content) if end is None else end
        lo, hi = self.content_char + start, self.content_char + end
        inside = [i for i in range(*self.scored) if self.offsets[i][1] > lo and self.offsets[i][0] < hi]
        return (inside[0], inside[-1] + 1) if inside else (self.scored[1], self.scored[1])


def encode_prompt(
    tokenizer, prompt: str | Sequence[Message], *, chat_template: bool = True, scored: bool = True
) -> EncodedPrompt:
    """Encode ``prompt`` (a user message, or a list of chat messages whose last one is scored).

    With ``chat_template`` and a tokenizer that has one, the messages are rendered with
    ``add_generation_prompt=True`` (exactly the ids ``apply_chat_template`` gives) and the
    scored tokens are those of the last message's content. Otherwise the raw text is encoded
    with the tokenizer's special tokens and every token but the first is scored.

    Raises ``ValueError`` for a prompt that encodes to no tokens, and with ``scored`` (the
    default: the prompt is to be scored, e.g. by a detector) also for a blank one or one with no
    token that can be scored. ``scored=False`` is for generation, which a one-token prompt can
    start.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise ValueError(f"prompt must be a string or a non-empty list of {{'role', 'content'}} messages; got {prompt!r}")
    content = messages[-1]["content"]
    if scored and not content.strip():
        raise ValueError(f"prompt is empty ({content!r}): it has no tokens of text to score")
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        content_char = text.rfind(content)
        encoded = _encode_with_offsets(tokenizer, text, add_special_tokens=False)
        reference = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        reference = list(reference["input_ids"] if hasattr(reference, "keys") else reference)
        if content_char < 0 or encoded is None or list(encoded[0]) != reference:
            # The rendered text does not re-tokenize to the template's ids (unusual templates):
            # score every token rather than guess where the content is.
            return EncodedPrompt(tuple(reference), (1, len(reference)), text, content, 0, None)
    else:
        text, content_char = content, 0
        encoded = _encode_with_offsets(tokenizer, text, add_special_tokens=True)
        if encoded is None:
            ids = list(tokenizer(text)["input_ids"])
            if not ids:
                raise ValueError(f"the prompt {content!r} encodes to no tokens")
            return EncodedPrompt(tuple(ids), (min(1, len(ids)), len(ids)), text, content, 0, None)
    ids, offsets = encoded
    if not ids:
        raise ValueError(f"the prompt {content!r} encodes to no tokens")
    end_char = content_char + len(content)
    inside = [i for i, (a, b) in enumerate(offsets) if b > content_char and a < end_char and b > a]
    start, end = (max(inside[0], 1), inside[-1] + 1) if inside else (len(ids), len(ids))
    if scored and start >= end:
        raise ValueError(f"prompt {content!r} has no token that can be scored (it encodes to {len(ids)} token(s))")
    return EncodedPrompt(tuple(ids), (start, end), text, content, content_char, tuple(offsets))


def _encode_with_offsets(tokenizer, text: str, *, add_special_tokens: bool):
    if not getattr(tokenizer, "is_fast", False):
        return None
    encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
