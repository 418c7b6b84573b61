"""PhraseBan: never complete a banned multi-token phrase.

A phrase of n tokens is banned by masking its last token whenever the n - 1 tokens before it
have just been generated. Only the completing token is removed, so the model may still start
the phrase and then take any other path.

Matching every banned prefix against the end of every row costs O(phrases) per step. Instead
the banned sequences are compiled once into an Aho-Corasick automaton over token ids (Aho &
Corasick 1975, "Efficient string matching: an aid to bibliographic search"): a trie of the
banned *prefixes* with failure links. A state is the longest suffix of the history that is a
banned prefix; its failure chain lists every other such suffix, so the tokens to mask at a
state are the completions collected along that chain. A step costs a few dictionary lookups
per row plus work proportional to the prefixes actually matched, whatever the number of phrases.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..core import MaskingProcessor
from ..numerics import NEG_INF
from ..validate import EmptyRowPolicy, NanPolicy, check_tokenizer
from .column_mask import ColumnMask

_FEW_TOKENS = 64  # a state masking at most this many tokens is written through one flat index per step


class PhraseBan(MaskingProcessor):
    """Ban phrases: mask any token that would complete a banned token sequence.

    The multi-token generalization of a deny-list, equivalent to Hugging Face's
    ``NoBadWordsLogitsProcessor`` (``generate(bad_words_ids=...)``) but with a per-step cost
    that does not grow with the number of phrases.

    Args:
        phrases: the strings to ban (a non-empty list of non-empty strings).
        tokenizer: a Hugging Face tokenizer; phrases are encoded with
            ``add_special_tokens=False``.
        variants: also ban the common tokenizations of each phrase: as given, stripped
            (a phrase at the start of a line or of the text), and with one leading space
            (a phrase after a word). Byte-level BPE tokenizes ``"cat"`` and ``" cat"``
            differently, so banning only one spelling leaves the other open.
        case_variants: also ban the lower-case, Capitalized and UPPER-case forms.
        on_empty: ``"raise"`` (default) or ``"keep_eos"`` for a row where every token ends up
            masked (see :class:`~logit_processors.core.MaskingProcessor`).
        eos_token_id: the EOS id(s) for ``on_empty="keep_eos"``; defaults to the
            tokenizer's.

    :meth:`from_token_ids` bans token-id sequences directly (no tokenizer), with the same
    ``bad_words_ids`` format as Hugging Face.

    State: the tokens to mask depend only on the last ``L - 1`` tokens of a row (``L`` the
    longest banned sequence), so each step reads those columns of ``input_ids`` and runs the
    automaton over them. Nothing is carried between calls: a new ``generate()`` call, a changed
    batch or beam search reordering rows can never mix histories, and ``reset()`` is only a
    cache flush. Reading those columns is one small device-to-host copy per step (free on CPU);
    the automaton needs the token values. Left padding is part of the history; a phrase cannot
    realistically match across it.

    Limitation: banning works on token sequences. It blocks the listed tokenizations of a
    phrase, not the text: a model can still spell a banned phrase through other tokens
    (character by character, or with a rare split). The variants cover the tokenizations a
    model normally produces; for a hard guarantee on text, check the decoded output as well.

    Example:
        >>> import torch
        >>> from logit_processors import PhraseBan
        >>> ban = PhraseBan.from_token_ids([[4], [1, 2, 3], [2, 5]])
        >>> ids = torch.tensor([[0, 1, 2], [7, 7, 2]])
        >>> out = ban(ids, torch.zeros(2, 8))
        >>> [row.isinf().nonzero().flatten().tolist() for row in out]  # row 0 ends with 1,2 and with 2
        [[3, 4, 5], [4, 5]]

        With a tokenizer (e.g. GPT-2's)::

            ban = PhraseBan(["New York", "as an AI"], tokenizer, case_variants=True)
            model.generate(**inputs, logits_processor=[ban])
    """

    def __init__(
        self,
        phrases: Sequence[str],
        tokenizer,
        variants: bool = True,
        case_variants: bool = False,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        *,
        on_nan: NanPolicy = "raise",
    ):
        phrases = _check_phrases(phrases)
        check_tokenizer("tokenizer", tokenizer, methods=("encode",))
        if eos_token_id is None:
            eos_token_id = getattr(tokenizer, "eos_token_id", None) if on_empty == "keep_eos" else None
        sequences = []
        for phrase in phrases:
            encoded = [
                tokenizer.encode(form, add_special_tokens=False)
                for form in phrase_variants(phrase, variants=variants, case_variants=case_variants)
            ]
            encoded = [ids for ids in encoded if len(ids) > 0]
            if not encoded:
                raise ValueError(f"phrases: {phrase!r} encodes to no tokens with this tokenizer")
            sequences.extend(encoded)
        super().__init__(on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        self.phrases = phrases
        self.variants, self.case_variants = bool(variants), bool(case_variants)
        self._compile(_check_sequences("phrases (encoded)", sequences))

    @classmethod
    def from_token_ids(
        cls,
        sequences: Sequence[Sequence[int]],
        *,
        on_empty: EmptyRowPolicy = "raise",
        eos_token_id: int | Sequence[int] | None = None,
        on_nan: NanPolicy = "raise",
    ) -> PhraseBan:
        """Ban token-id sequences directly: ``[[id, ...], ...]``, as HF's ``bad_words_ids``.

        Unlike ``NoBadWordsLogitsProcessor(bad_words_ids, eos_token_id)``, ``eos_token_id`` here
        is only the ``on_empty="keep_eos"`` fallback; a banned ``[eos]`` stays banned.
        """
        self = cls.__new__(cls)
        MaskingProcessor.__init__(self, on_empty=on_empty, eos_token_id=eos_token_id, on_nan=on_nan)
        self.phrases = None
        self.variants = self.case_variants = False
        self._compile(_check_sequences("sequences", sequences))
        return self

    # ----------------------------------------------------------------------------------------
    # Build: a trie of the banned prefixes, with failure links (breadth first).

    def _compile(self, sequences: list[tuple[int, ...]]) -> None:
        self.sequences = sequences
        self._max_id = max(max(seq) for seq in sequences)
        self._window = max(len(seq) for seq in sequences) - 1  # history that can matter
        # Single tokens are banned everywhere: one static column mask.
        self._static_ids = sorted({seq[0] for seq in sequences if len(seq) == 1})
        static = set(self._static_ids)

        children: list[dict[int, int]] = [{}]  # state -> {token: next state}; state 0 = root
        completions: list[set[int]] = [set()]  # state -> last tokens of sequences with this prefix
        for seq in sequences:
            if len(seq) == 1:
                continue
            state = 0
            for token in seq[:-1]:
                nxt = children[state].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[state][token] = nxt
                    children.append({})
                    completions.append(set())
                state = nxt
            if seq[-1] not in static:  # already masked everywhere
                completions[state].add(seq[-1])

        fail = [0] * len(children)
        queue = deque(children[0].values())
        while queue:
            state = queue.popleft()
            for token, child in children[state].items():
                back = fail[state]
                while back and token not in children[back]:
                    back = fail[back]
                fail[child] = children[back].get(token, 0)
                queue.append(child)

        # The smallest id that no sequence ends with: never masked here (see process()).
        ends = {seq[-1] for seq in sequences}
        self._witness = next(i for i in range(len(ends) + 1) if i not in ends)

        self._children = children
        self._fail = fail
        self._completions = completions
        self._masked_at: dict[int, list[int]] = {}  # state -> sorted tokens to mask (lazy)
        self._checked_widths: set[int] = set()
        self._static_columns: dict[int, ColumnMask] = {}  # per scores width

    @property
    def history_window(self) -> int:
        """How many of a row's last tokens can decide what is masked (the longest banned sequence
        minus one): a caller that keeps the history elsewhere (vLLM) passes only those."""
        return self._window

    def _tokens_to_mask(self, state: int) -> list[int]:
        """Completions of every banned prefix that is a suffix of this state (its failure chain)."""
        tokens = self._masked_at.get(state)
        if tokens is None:
            merged: set[int] = set()
            s = state
            while s:
                merged |= self._completions[s]
                s = self._fail[s]
            tokens = self._masked_at[state] = sorted(merged)
        return tokens

    # ----------------------------------------------------------------------------------------
    # Step

    def process(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        width = scores.shape[-1]
        if width not in self._checked_widths:
            self._check_width(width)
        hits = self._matched_states(input_ids)
        if not hits and not self._static_ids:
            return scores
        if self._static_ids:
            # Single-token phrases are banned in every row: a fixed column mask.
            columns = self._static_columns.get(width)
            if columns is None:
                columns = self._static_columns[width] = ColumnMask(self._static_mask(width))
            out, _ = columns.apply(scores)
        else:
            out = scores.clone()
        if hits:
            out = self._mask_completions(out, hits)
        # A column this processor never masks proves, where it is finite, that its row is not
        # empty: the full check reads one column instead of the whole tensor.
        witness = out.select(1, self._witness) if self._witness < width else None
        return self.finish(out, witness)

    def _mask_completions(self, out: torch.Tensor, hits: list[tuple[int, int]]) -> torch.Tensor:
        """Mask, in ``out`` (ours), the completing tokens of every matched ``(row, state)``."""
        if not out.is_contiguous():  # only for strided input; the flat offsets below need it
            out = out.contiguous()
        width = out.shape[1]
        # Few tokens per state (the usual case): every (row, token) as a flat offset, one
        # scattered write for the whole batch. A state with many completions keeps a cached
        # index tensor and is written row by row, never building a long Python list per step.
        offsets = []
        for row, state in hits:
            tokens = self._tokens_to_mask(state)
            if len(tokens) <= _FEW_TOKENS:
                start = row * width
                offsets.extend(start + token for token in tokens)
            else:
                many = self._cache.get(out.device, None, ("state", state), lambda: torch.tensor(tokens))
                out[row].index_fill_(0, many, NEG_INF)
        if offsets:
            # through numpy: a few-element index tensor in under 1 us, where torch.tensor(list) takes 2.5
            index = torch.from_numpy(np.array(offsets, dtype=np.int64)).to(out.device)
            out.view(-1).index_fill_(0, index, NEG_INF)
        return out

    def _matched_states(self, input_ids: torch.Tensor) -> list[tuple[int, int]]:
        """``(row, state)`` for each row whose history ends in a banned prefix."""
        if self._window == 0 or input_ids.shape[1] == 0:
            return []
        children, fail, completions_at = self._children, self._fail, self._tokens_to_mask
        hits = []
        # The only host read per step: the last L - 1 columns, in one copy (through numpy on
        # the CPU: no torch view to build, ~0.7 us less per step).
        ids = input_ids.numpy() if input_ids.is_cpu else input_ids
        for row, window in enumerate(ids[:, -self._window :].tolist()):
            state = 0
            for token in window:
                while True:
                    nxt = children[state].get(token)
                    if nxt is not None:
                        state = nxt
                        break
                    if state == 0:
                        break
                    state = fail[state]
            if state and completions_at(state):
                hits.append((row, state))
        return hits

    def _check_width(self, width: int) -> None:
        if self._max_id >= width:
            too_big = sorted({t for seq in self.sequences for t in seq if t >= width})
            raise ValueError(
                f"PhraseBan: banned sequences contain token ids {too_big[:10]} outside the scores' "
                f"{width} columns; allowed ids are 0..{width - 1}"
            )
        self._checked_widths.add(width)

    def _static_mask(self, width: int) -> torch.Tensor:
        mask = torch.zeros(width, dtype=torch.bool)
        mask[self._static_ids] = True
        return mask

    def reset(self) -> None:
        """Nothing to forget (state is derived from ``input_ids`` each step); drops cached tensors."""
        self._cache.clear()
        self._static_columns.clear()

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self.phrases is not None:
            fields["phrases"] = self.phrases if len(self.phrases) <= 8 else f"<{len(self.phrases)} phrases>"
        fields["sequences"] = len(self.sequences)
        fields["on_empty"] = self.on_empty
        return fields


def phrase_variants(phrase: str, *, variants: bool = True, case_variants: bool = False) -> list[str]:
    """The spellings of ``phrase`` that :class:`PhraseBan` bans, in order, without duplicates.

    Example:
        >>> phrase_variants("new york", case_variants=True)
        ['new york', ' new york', 'New york', ' New york', 'NEW YORK', ' NEW YORK']
    """
    core = phrase.strip()
    if not core:  # whitespace only: ban it as given
        return [phrase]
    lead = phrase[: len(phrase) - len(phrase.lstrip())]
    trail = phrase[len(phrase.rstrip()) :]
    cores = [core]
    if case_variants:
        cores += [core.lower(), core[:1].upper() + core[1:], core.upper()]
    forms = [phrase]
    for c in cores:
        forms.append(lead + c + trail)
        if variants:
            forms += [c, " " + c]
    return list(dict.fromkeys(forms))


def _check_phrases(phrases: object) -> list[str]:
    if isinstance(phrases, str) or not isinstance(phrases, Iterable):
        raise ValueError(f"phrases must be a non-empty list of strings; got {phrases!r}")
    phrases = list(phrases)
    if not phrases:
        raise ValueError("phrases must be a non-empty list of strings; got an empty list")
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str):
            raise ValueError(f"phrases[{i}] must be a string; got {type(phrase).__name__} {phrase!r}")
        if phrase == "":
            raise ValueError(f"phrases[{i}] is the empty string; every phrase needs at least one character")
    return phrases


def _check_sequences(name: str, sequences: object) -> list[tuple[int, ...]]:
    """Unique token-id sequences, sorted; ValueError naming ``name`` and the bad entry."""
    if isinstance(sequences, (str, bytes, torch.Tensor)) or not isinstance(sequences, Iterable):
        raise ValueError(f"{name} must be a non-empty list of token-id lists; got {sequences!r}")
    sequences = list(sequences)
    if not sequences:
        raise ValueError(f"{name} must be a non-empty list of token-id lists; got an empty list")
    checked = set()
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Iterable):
            raise ValueError(f"{name}[{i}] must be a list of token ids; got {seq!r}")
        seq = list(seq)
        if not seq:
            raise ValueError(f"{name}[{i}] is empty; every banned sequence needs at least one token")
        if any(isinstance(t, bool) or not isinstance(t, numbers.Integral) for t in seq):
            raise ValueError(f"{name}[{i}] must contain integer token ids; got {seq!r}")
        if any(t < 0 for t in seq):
            raise ValueError(f"{name}[{i}] contains negative token ids: {seq!r}; ids must be >= 0")
        checked.add(tuple(int(t) for t in seq))
    return sorted(checked)
