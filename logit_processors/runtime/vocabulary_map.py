"""A member's next-token distribution, carried over to the primary model's vocabulary.

The primary generates from its own vocabulary; a member with another tokenizer predicts its own
tokens. Its probability of the primary's next token ``t`` is obtained from one (cached) forward
pass, in three parts (see :mod:`logit_processors.runtime.aligned_members` for where the member's
distributions come from):

* **the member's next token, mapped** (``first_tokens``): each member token ``m`` gives its
  probability to the *first token of the primary's canonical encoding of m's text*: member
  ``"▁statement"`` to primary ``" statement"``, member ``"▁internationalization"`` to primary
  ``" international"`` if that is how the primary begins the word. This partitions the member's
  mass (no double counting of prefixes: ``" P"``, ``" Pa"``, ``" Par"`` are not all credited with
  ``" Paris"``), so the result is a distribution over the primary's vocabulary. The member's EOS
  gives its mass to the primary's EOS; its other special tokens stand for no text and are dropped
  (the rest renormalized).
* **text already written that the member would merge with what follows** (``extensions``): when
  the text ends inside what the member would make one token (the primary wrote ``" intern"`` and
  the member has ``"▁international"``), the member's probability of the continuation
  ``"ational"`` is read one token earlier: from the member's distribution *before* its last token
  ``r``, each token that extends ``r`` gives its mass to the primary's first token of the rest.
* **bytes of an unfinished character**: a byte-level primary can end a step inside a UTF-8
  character; those bytes join ``r`` the same way.

The tables are built from the two tokenizers alone (:class:`~logit_processors.runtime.text_codec.
TextCodec`), once; ``extensions`` are computed per text ``r`` on first use and kept.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> from logit_processors.runtime.text_codec import TextCodec
    >>> _, tokenizer = load_tiny_gpt2()
    >>> codec = TextCodec(tokenizer)
    >>> vmap = VocabularyMap(codec, codec)                  # a tokenizer against itself
    >>> bool((vmap.first_tokens[:len(codec)] == torch.arange(len(codec))).all())
    True
    >>> members, primaries = vmap.extensions(b" stat")
    >>> [(codec.pieces[m], codec.pieces[p]) for m, p in zip(members.tolist(), primaries.tolist())][:2]
    [(b' state', b'e'), (b' statement', b'ement')]
"""

from __future__ import annotations

import bisect

import torch

from .text_codec import TextCodec


class VocabularyMap:
    """The tables that carry a member's token probabilities over to the primary's vocabulary.

    ``first_tokens [V_member]``: the primary id each member id gives its probability to (``-1``:
    dropped, a special token other than EOS). :meth:`extensions` gives, for a text ``r``, the
    member tokens that extend it and the primary id of the rest of each.
    """

    def __init__(self, primary: TextCodec, member: TextCodec, *, max_cached_extensions: int = 4096):
        self.primary, self.member = primary, member
        first = primary.first_tokens(member.pieces)
        primary_eos = min(primary.eos_ids) if primary.eos_ids else -1
        for i in member.special_ids:
            first[i] = primary_eos if i in member.eos_ids else -1
        self.first_tokens = torch.tensor(first, dtype=torch.long)
        order = sorted((piece, i) for i, piece in enumerate(member.pieces) if i not in member.special_ids and piece)
        self._sorted_pieces = [piece for piece, _ in order]
        self._sorted_ids = [i for _, i in order]
        self._extensions: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self._max_cached = max_cached_extensions

    @classmethod
    def of(cls, primary: TextCodec, member: TextCodec) -> VocabularyMap:
        """The map between two codecs, built once per pair (a 262,144-token vocabulary: seconds)."""
        key = (id(primary), id(member))
        found = _MAPS.get(key)
        if found is None or found.primary is not primary or found.member is not member:
            found = _MAPS[key] = cls(primary, member)
        return found

    @property
    def reached(self) -> torch.Tensor:
        """``[V_primary]`` bool: the primary tokens some member token maps to."""
        out = torch.zeros(len(self.primary), dtype=torch.bool)
        out[self.first_tokens[self.first_tokens >= 0]] = True
        return out

    def extensions(self, prefix: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """``(member ids, primary ids)``: the member tokens whose text starts with ``prefix`` and is
        longer, and the primary's first token of the rest of each (pairs with no such token left out)."""
        found = self._extensions.get(prefix)
        if found is not None:
            return found
        lo = bisect.bisect_left(self._sorted_pieces, prefix)
        hi = bisect.bisect_left(self._sorted_pieces, _successor(prefix)) if _successor(prefix) else len(self._sorted_pieces)
        members = [self._sorted_ids[k] for k in range(lo, hi) if len(self._sorted_pieces[k]) > len(prefix)]
        rests = [self.member.pieces[m][len(prefix):] for m in members]
        primaries = self.primary.first_tokens(rests) if rests else []
        keep = [k for k, p in enumerate(primaries) if p >= 0]
        found = (torch.tensor([members[k] for k in keep], dtype=torch.long),
                 torch.tensor([primaries[k] for k in keep], dtype=torch.long))
        if len(self._extensions) >= self._max_cached:
            self._extensions.clear()
        self._extensions[prefix] = found
        return found


_MAPS: dict[tuple[int, int], VocabularyMap] = {}


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix`` (None: none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
