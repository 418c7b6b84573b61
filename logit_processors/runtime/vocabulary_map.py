"""A member's next-token distribution, carried over to the primary model's vocabulary.

The primary generates from its own vocabulary; a member with another tokenizer predicts its own
tokens. Each member token's probability goes to the primary tokens that begin the same text
(see :mod:`logit_processors.runtime.aligned_members` for the distributions it is applied to):

* **one target**: a member token whose text is longer than the primary's tokens gives its
  probability to the primary's first token of that text (its canonical encoding): member
  ``"▁internationalization"`` to primary ``" international"``, if the primary begins the word
  so. Member ``"▁statement"`` gives its mass to primary ``" statement"`` when the primary has it.
* **several targets**: a member token that is a prefix of longer primary tokens (member
  ``"▁state"``, primary ``" state"``, ``" statement"``, ``" states"``) cannot tell them apart in
  one step. Its probability is split among the primary tokens it is the longest member-token
  prefix of (not ``" statement"`` if the member has ``"▁statement"`` itself: that one says so),
  in proportion to the primary's own probabilities of them at this step.

The member's EOS gives its mass to the primary's EOS; its other special tokens stand for no text
and are dropped (the rest renormalized). Every member token's mass lands on some primary token(s),
and no prefix is credited twice (``" P"``, ``" Pa"``, ``" Par"`` do not all receive ``" Paris"``),
so the result is a distribution over the primary's vocabulary.

:meth:`VocabularyMap.extensions` does the same for the member tokens that *extend* a text ``r``
already written (the member would have written ``"▁cats"`` where the primary wrote ``" cat"``):
the rest of each (``"s"``) goes to the primary tokens that begin with it (split as above; the
primary's first token of the rest if none does).

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> from logit_processors.runtime.text_codec import TextCodec
    >>> _, tokenizer = load_tiny_gpt2()
    >>> codec = TextCodec(tokenizer)
    >>> vmap = VocabularyMap(codec, codec)         # a tokenizer against itself: the identity
    >>> bool((vmap.pairs.members == vmap.pairs.primaries).all()), len(vmap.pairs)
    (True, 2000)
    >>> len(vmap.extensions(b" stat"))   # " state" is no extension: the primary writes it whole
    0
"""

from __future__ import annotations

import bisect

import torch

from .text_codec import TextCodec


class VocabularyMap:
    """The tables that carry a member's token probabilities over to the primary's vocabulary.

    ``pairs``: every (member token, primary token it gives mass to) pair (a :class:`PairTable`);
    a member token with several primary tokens splits its mass in proportion to the primary's
    probabilities (:meth:`PairTable.log_mass`).
    """

    def __init__(self, primary: TextCodec, member: TextCodec, *, max_cached_extensions: int = 4096):
        self.primary, self.member = primary, member
        self._primary_order = sorted((p, i) for i, p in enumerate(primary.pieces) if p and i not in primary.special_ids)
        self._primary_sorted = [p for p, _ in self._primary_order]
        member_pieces = {p for i, p in enumerate(member.pieces) if p and i not in member.special_ids}
        # How the primary encodes each member token's text; and, for a member token ending in
        # spaces that the member writes before a word ("▁▁" + "The"), how it does so before a word.
        plain = primary.encode_pieces(member.pieces)
        before_word = _kept_before_a_word(member)
        probed = dict(zip(before_word, primary.encode_pieces([member.pieces[i] for i in before_word], probe="a"),
                          strict=True))
        self._ends = [set(ends) | set(probed.get(i, ([], []))[1]) for i, (_, ends) in enumerate(plain)]
        # Each primary token goes with the longest member token its text begins with.
        longest: dict[bytes, list[int]] = {}
        for piece, t in self._primary_order:
            prefix = next((piece[:k] for k in range(len(piece), 0, -1) if piece[:k] in member_pieces), None)
            if prefix is not None:
                longest.setdefault(prefix, []).append(t)
        members, primaries = [], []
        primary_eos = min(primary.eos_ids) if primary.eos_ids else -1
        for i, piece in enumerate(member.pieces):
            if i in member.special_ids:
                targets = [primary_eos] if i in member.eos_ids and primary_eos >= 0 else []
            else:
                targets = list(longest.get(piece, []))
                word_start = probed.get(i, ([], []))[0][:1]
                targets += [t for t in word_start if t not in targets]
                targets = targets or plain[i][0][:1] or primary.first_tokens([piece])
            targets = [t for t in targets if t >= 0]
            members += [i] * len(targets)
            primaries += targets
        self.pairs = PairTable(members, primaries)
        order = sorted((piece, i) for i, piece in enumerate(member.pieces) if i not in member.special_ids and piece)
        self._member_sorted = [piece for piece, _ in order]
        self._member_ids = [i for _, i in order]
        self._extensions: dict[bytes, PairTable] = {}
        self._max_cached = max_cached_extensions

    def _primary_stops_at(self, member_id: int, offset: int) -> bool:
        """Whether the primary's encoding of the member token's text ends a token at byte ``offset``
        (True when it cannot tell: text that is part of a character)."""
        ends = self._ends[member_id]
        return not ends or offset in ends

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
        """``[V_primary]`` bool: the primary tokens some member token gives mass to."""
        out = torch.zeros(len(self.primary), dtype=torch.bool)
        out[self.pairs.primaries] = True
        return out

    def extensions(self, prefix: bytes) -> PairTable:
        """The pairs of (member token, primary token): the member tokens whose text starts with ``prefix``
        and is longer, each with the primary tokens that begin with the rest of its text (or, if
        none does, the primary's first token of the rest)."""
        found = self._extensions.get(prefix)
        if found is not None:
            return found
        # The member tokens that extend the text, among those the primary would have written with a
        # token boundary where the text ends (else the primary, having stopped there, rules them out).
        members = [m for m in (self._member_ids[k] for k in range(*_prefix_range(self._member_sorted, prefix)))
                   if len(self.member.pieces[m]) > len(prefix) and self._primary_stops_at(m, len(prefix))]
        rests = [self.member.pieces[m][len(prefix):] for m in members]
        pair_members, pair_primaries, alone = [], [], []
        for m, rest in zip(members, rests, strict=True):
            lo, hi = _prefix_range(self._primary_sorted, rest)
            if lo < hi:
                pair_members += [m] * (hi - lo)
                pair_primaries += [self._primary_order[k][1] for k in range(lo, hi)]
            else:
                alone.append((m, rest))
        firsts = self.primary.first_tokens([rest for _, rest in alone]) if alone else []
        for (m, _), t in zip(alone, firsts, strict=True):
            if t >= 0:
                pair_members.append(m)
                pair_primaries.append(t)
        found = PairTable(pair_members, pair_primaries)
        if len(self._extensions) >= self._max_cached:
            self._extensions.clear()
        self._extensions[prefix] = found
        return found


class PairTable:
    """(member token, primary token) pairs in which each member token gives its mass to one or
    several primary tokens; the pairs of one member token are consecutive. ``members``/``primaries``:
    all pairs; those of member tokens with one target, and of those with several, apart."""

    def __init__(self, members: list[int], primaries: list[int]):
        self.members = torch.tensor(members, dtype=torch.long)
        self.primaries = torch.tensor(primaries, dtype=torch.long)
        counts: dict[int, int] = {}
        for m in members:
            counts[m] = counts.get(m, 0) + 1
        single = torch.tensor([counts[m] == 1 for m in members], dtype=torch.bool)
        self.single_members, self.single_primaries = self.members[single], self.primaries[single]
        self.group_members, self.group_primaries = self.members[~single], self.primaries[~single]
        # Consecutive group numbers 0..n_groups-1 of the pairs of member tokens with several targets.
        starts = torch.ones(len(self.group_members), dtype=torch.long)
        starts[1:] = (self.group_members[1:] != self.group_members[:-1]).long()
        self.group_of_pair = starts.cumsum(0) - 1
        self.n_groups = int(self.group_of_pair[-1]) + 1 if len(self.group_of_pair) else 0

    def __len__(self) -> int:
        return len(self.members)

    def log_mass(self, member_log_mass: torch.Tensor,
                 primary_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-mass of each pair, its primary token)``: a member token's log-mass (indexed by member
        id) goes whole to its one target, or is split among several in proportion to the primary's
        probabilities; ``-inf`` where the primary gives the target(s) probability 0."""
        single = member_log_mass[self.single_members]
        single = torch.where(torch.isneginf(primary_log_probs[self.single_primaries]), -torch.inf, single)
        if not self.n_groups:
            return single, self.single_primaries
        log_p = primary_log_probs[self.group_primaries]
        group = self.group_of_pair
        top = torch.full((self.n_groups,), -torch.inf, dtype=log_p.dtype).scatter_reduce(0, group, log_p, "amax")[group]
        above = torch.where(torch.isneginf(top), -torch.inf, log_p - top)  # no -inf - -inf
        spread = torch.zeros(self.n_groups, dtype=log_p.dtype).index_add_(0, group, above.exp()).log()[group]
        share = torch.where(torch.isneginf(top), -torch.inf, above - spread)
        shared = member_log_mass[self.group_members] + share
        return torch.cat([single, shared]), torch.cat([self.single_primaries, self.group_primaries])


def _kept_before_a_word(member: TextCodec) -> list[int]:
    """The member tokens ending in whitespace that the member keeps whole before a word (Gemma's
    ``"▁▁"`` in ``"▁▁" + "The"``; not GPT-2's ``"ĠĠ"``, which gives its last space to the word)."""
    spaced = [i for i, p in enumerate(member.pieces) if p[-1:].isspace() and i not in member.special_ids]
    encoded = member.encode_pieces([member.pieces[i] for i in spaced], probe="a")
    return [i for i, (ids, _) in zip(spaced, encoded, strict=True) if ids[:1] == [i]]


def _prefix_range(sorted_pieces: list[bytes], prefix: bytes) -> tuple[int, int]:
    """``[lo, hi)``: the entries of ``sorted_pieces`` that start with ``prefix``."""
    lo = bisect.bisect_left(sorted_pieces, prefix)
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return lo, len(sorted_pieces)
    return lo, bisect.bisect_left(sorted_pieces, stripped[:-1] + bytes([stripped[-1] + 1]))


_MAPS: dict[tuple[int, int], VocabularyMap] = {}
