"""Token masks: allow/deny lists and vocabulary filters.

Masking sets a token's logit to ``-inf``: its count ``exp(z)`` becomes 0, so it can never be
chosen, and the other tokens' relative odds are untouched.

LM heads are often padded beyond the tokenizer (GPT-2: 50,257 tokens, 50,304 columns). A mask
built for ``n`` tokens applies to any scores tensor with at least ``n`` columns: with an
allow-list the extra columns are masked (they are not tokens), with a deny-list they are left
alone. A scores tensor narrower than the mask is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from ..core import MaskingProcessor
from ..validate import EmptyRowPolicy, NanPolicy, check_ids_in_range, check_tokenizer, positive_int, token_ids
from .column_mask import ColumnMask


class TokenMask(MaskingProcessor):
    """Allow and/or deny token ids.

    Args:
        allow: ids that may be generated (every other token is masked), or a bool tensor,
            ``True`` = allowed, of shape ``[V]`` or ``[B, V]`` for per-row masks.
        deny: ids that may never be generated, or a bool tensor, ``True`` = denied, ``[V]``
            or ``[B, V]``. With both, a token must be allowed and not denied.
        vocab_size: the tokenizer's size, if known: ids are checked against it at once, and
            scores narrower than it are refused.
        on_empty: ``"raise"`` (default) or ``"keep_eos"`` for a row where every token ends up
            masked (see :class:`~logit_processors.core.MaskingProcessor`).
        eos_token_id: the EOS id(s) for ``on_empty="keep_eos"``.

    Per-row masks have one row per batch row, or one per prompt when ``generate()`` expands
    each prompt into several consecutive rows (``num_return_sequences``, beams).

    Example:
        >>> import torch
        >>> from logit_processors import TokenMask
        >>> ids = torch.zeros(1, 1, dtype=torch.long)
        >>> TokenMask(deny=[1])(ids, torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, -inf, 3.0]]
        >>> TokenMask(allow={0, 2})(ids, torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, -inf, 3.0]]
    """

    def __init__(
        self,
        allow: Iterable[int] | torch.Tensor | None = None,
        deny: Iterable[int] | torch.Tensor | None = None,
        *,
        vocab_size: int | None = None,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        on_nan: NanPolicy = "raise",
    ):
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        if allow is None and deny is None:
            raise ValueError("TokenMask needs allow=..., deny=... or both; got neither")
        self.vocab_size = None if vocab_size is None else positive_int("vocab_size", vocab_size)
        vocab_size = self.vocab_size
        self.allow = _ids_or_mask("allow", allow, vocab_size)
        self.deny = _ids_or_mask("deny", deny, vocab_size)
        self._columns: dict[int, ColumnMask] = {}  # per scores width
        if isinstance(self.allow, list) and isinstance(self.deny, list):
            # Two id lists fold into one allow-list: allowed and not denied.
            denied = set(self.deny)
            self.allow = [i for i in self.allow if i not in denied]
            self.deny = None

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        width = scores.shape[-1]
        if self.vocab_size is not None and width < self.vocab_size:
            raise ValueError(
                f"scores have {width} columns but this TokenMask was built for vocab_size={self.vocab_size}; "
                "scores must be at least as wide as the vocabulary"
            )
        columns = self._columns.get(width)
        if columns is None:
            columns = self._columns[width] = ColumnMask(self._removal(width))
        out, witness = columns.apply(scores)
        return self.finish(out, witness)

    def _removal(self, width: int) -> torch.Tensor:
        """Bool ``[width]`` or ``[B, width]``: True = removed (built once per scores width)."""
        remove = torch.zeros(width, dtype=torch.bool)
        if self.allow is not None:
            remove = remove | ~_as_mask("allow", self.allow, width, pad_value=False)
        if self.deny is not None:
            remove = remove | _as_mask("deny", self.deny, width, pad_value=False)
        return remove

    def _repr_fields(self) -> dict[str, object]:
        def short(x: object) -> object:
            if isinstance(x, torch.Tensor):
                return f"<bool mask {tuple(x.shape)}>"
            if isinstance(x, list) and len(x) > 8:
                return f"<{len(x)} ids>"
            return x

        return {"allow": short(self.allow), "deny": short(self.deny), "on_empty": self.on_empty}


def _ids_or_mask(name: str, value: object, vocab_size: int | None) -> list[int] | torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool or value.dim() not in (1, 2):
            raise ValueError(
                f"{name} as a tensor must be a bool mask of shape [V] or [B, V]; "
                f"got dtype {value.dtype} and shape {tuple(value.shape)}"
            )
        if vocab_size is not None and value.shape[-1] > vocab_size:
            raise ValueError(f"{name} mask has {value.shape[-1]} columns but vocab_size is {vocab_size}")
        return value.detach().cpu()
    return token_ids(name, value, vocab_size)


def _as_mask(name: str, value: list[int] | torch.Tensor, width: int, pad_value: bool) -> torch.Tensor:
    """A bool mask ``[width]`` or ``[B, width]`` from ids or a (possibly narrower) mask tensor."""
    if isinstance(value, list):
        check_ids_in_range(name, value, width)
        mask = torch.zeros(width, dtype=torch.bool)
        mask[value] = True
        return mask
    if value.shape[-1] > width:
        raise ValueError(
            f"{name} mask has {value.shape[-1]} columns but scores have only {width}; "
            "scores must be at least as wide as the mask"
        )
    padding = width - value.shape[-1]
    return torch.nn.functional.pad(value, (0, padding), value=pad_value) if padding else value


class VocabFilter(MaskingProcessor):
    """Mask every token whose decoded string fails ``predicate`` (e.g. ASCII-only, digits-only).

    The predicate runs once over the tokenizer's vocabulary (at construction); the resulting
    mask is cached per device. Special tokens (EOS, ...) are kept by default so generation can
    still end; pass ``keep_special_tokens=False`` to filter them too. Columns beyond the
    tokenizer (a padded LM head) are masked: they are not tokens.

    Example:
        >>> import torch
        >>> from logit_processors import VocabFilter
        >>> from logit_processors.models import load_tiny_gpt2
        >>> _, tokenizer = load_tiny_gpt2()
        >>> digits = VocabFilter(tokenizer, lambda s: s.strip().isdigit())
        >>> out = digits(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 2048))
        >>> kept = out[0].isfinite().nonzero().flatten().tolist()
        >>> all(tokenizer.decode([i]).strip().isdigit() or i in tokenizer.all_special_ids for i in kept)
        True
    """

    def __init__(
        self,
        tokenizer,
        predicate: Callable[[str], bool],
        *,
        keep_special_tokens: bool = True,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        on_nan: NanPolicy = "raise",
    ):
        check_tokenizer("tokenizer", tokenizer, methods=("batch_decode", "__len__"))
        if eos_token_id is None:
            eos_token_id = getattr(tokenizer, "eos_token_id", None)
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        if not callable(predicate):
            raise TypeError(f"predicate must be a callable str -> bool; got {predicate!r}")
        self.predicate = predicate
        self.keep_special_tokens = bool(keep_special_tokens)
        vocab_size = len(tokenizer)
        special = set(getattr(tokenizer, "all_special_ids", []) or []) if keep_special_tokens else set()
        strings = tokenizer.batch_decode([[i] for i in range(vocab_size)], clean_up_tokenization_spaces=False)
        allowed = torch.tensor([i in special or bool(predicate(s)) for i, s in enumerate(strings)], dtype=torch.bool)
        self.allowed = allowed
        self.vocab_size = vocab_size
        self._columns: dict[int, ColumnMask] = {}  # per scores width

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        width = scores.shape[-1]
        if width < self.vocab_size:
            raise ValueError(
                f"scores have {width} columns but the tokenizer has {self.vocab_size} tokens; "
                "scores must be at least as wide as the vocabulary"
            )
        columns = self._columns.get(width)
        if columns is None:
            columns = self._columns[width] = ColumnMask(~_as_mask("allowed", self.allowed, width, pad_value=False))
        out, witness = columns.apply(scores)
        return self.finish(out, witness)

    def _repr_fields(self) -> dict[str, object]:
        return {"predicate": getattr(self.predicate, "__name__", self.predicate), "kept": int(self.allowed.sum())}


#: The tests on a token's text that :class:`TextPredicate` can name: ``str`` methods that take no
#: argument and return a bool.
TEXT_TESTS = {
    name: getattr(str, name)
    for name in ("isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
                 "isnumeric", "isprintable", "isspace", "istitle", "isupper")
}


class TextPredicate:
    """A test on a token's text that can be written down (in a spec, over HTTP), unlike a lambda.

    Either ``test``, the name of a ``str`` method (``"isascii"``, ``"isdigit"``, ... see
    :data:`TEXT_TESTS`), or ``chars``, a set of characters every character of the text must
    belong to; with ``strip=True`` the text's surrounding whitespace is removed first (byte-level
    BPE spells a word after a space as ``" word"``). For :class:`VocabFilter`.

    Example:
        >>> TextPredicate("isdigit", strip=True)(" 42"), TextPredicate(chars="ab")("abba"), TextPredicate(chars="ab")("abc")
        (True, True, False)
    """

    def __init__(self, test: str | None = None, *, chars: str | None = None, strip: bool = False):
        if (test is None) == (chars is None):
            raise ValueError(f"TextPredicate needs exactly one of test=... or chars=...; got test={test!r}, chars={chars!r}")
        if test is not None and test not in TEXT_TESTS:
            raise ValueError(f"test must be one of {sorted(TEXT_TESTS)}; got {test!r}")
        if chars is not None and not isinstance(chars, str):
            raise ValueError(f"chars must be a string of allowed characters; got {chars!r}")
        if not isinstance(strip, bool):
            raise ValueError(f"strip must be true or false; got {strip!r}")
        self.test, self.chars, self.strip = test, chars, strip
        self._allowed = None if chars is None else frozenset(chars)

    def __call__(self, text: str) -> bool:
        if self.strip:
            text = text.strip()
        if self._allowed is not None:
            return all(c in self._allowed for c in text)
        return TEXT_TESTS[self.test](text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextPredicate) and (self.test, self.chars, self.strip) == (other.test, other.chars, other.strip)

    def __hash__(self) -> int:
        return hash((self.test, self.chars, self.strip))

    def __repr__(self) -> str:
        what = f"{self.test!r}" if self.test is not None else f"chars={self.chars!r}"
        return f"TextPredicate({what}{', strip=True' if self.strip else ''})"
