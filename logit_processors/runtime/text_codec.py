"""A tokenizer seen as a lossless code between text and token ids, with every token's bytes.

Two models with different tokenizers agree on text, not on ids, and the common ground is bytes:
``TextCodec`` gives each token id the bytes it stands for, encodes a text canonically (the ids
the tokenizer itself produces, special-token strings in the text encoded as text), and refuses a
text whose tokens do not spell it back byte for byte, naming the part it cannot encode.

What a token's bytes are depends on the tokenizer's scheme, read from its decoder:

* **byte-level BPE** (GPT-2, SmolLM2, Llama 3, Qwen): every token string is a run of the 256
  printable stand-ins of bytes (``Ġ`` is the space); a token may hold part of a UTF-8 character;
* **SentencePiece-style** (Gemma, Llama 2, Mistral): ``▁`` stands for the space and
  ``<0xXX>`` tokens for single bytes (byte fallback); the rest is the token's UTF-8 text.

Special tokens (BOS, EOS, chat markers) stand for no text: their bytes are empty.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> _, tokenizer = load_tiny_gpt2()
    >>> codec = TextCodec(tokenizer)
    >>> ids = codec.encode("The if statement")
    >>> [codec.pieces[i] for i in ids]
    [b'The', b' if', b' statement']
    >>> codec.token_ends(ids)                  # byte offset where each token ends
    [3, 6, 16]
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Sequence
from functools import cached_property

_CODECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in of each byte, as ``{character: byte}``."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins, extra = {}, 0
    for b in range(256):
        if b in printable:
            stand_ins[chr(b)] = b
        else:
            stand_ins[chr(256 + extra)] = b
            extra += 1
    return stand_ins


class TextCodec:
    """``tokenizer`` (a Hugging Face fast tokenizer) as a lossless code between text and ids.

    ``pieces[i]``: the bytes of token ``i`` (``b""`` for special tokens); ``start_ids``: the ids a
    document starts with (the tokenizer's own prefix such as Gemma's ``<bos>``, else
    ``<|endoftext|>``, else its BOS or EOS); ``name`` appears in error messages.
    """

    def __init__(self, tokenizer, name: str = "the tokenizer"):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"{name} must be a Hugging Face fast tokenizer (with a backend_tokenizer); "
                f"got {type(tokenizer).__name__}"
            )
        from tokenizers import Tokenizer

        self.tokenizer, self.name = tokenizer, name
        spec = json.loads(backend.to_str())
        # A private copy that encodes special-token strings found in a text as text.
        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.encode_special_tokens = True
        self._backend.no_padding()
        self._backend.no_truncation()
        self.scheme = _scheme(spec)
        self.pieces = _pieces(tokenizer, spec, self.scheme)
        self.special_ids = frozenset(i for i, piece in enumerate(self.pieces) if piece is None)
        self.pieces = [b"" if piece is None else piece for piece in self.pieces]
        self.start_ids = _start_ids(tokenizer)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = frozenset([] if eos is None else [eos] if isinstance(eos, int) else list(eos))

    @classmethod
    def of(cls, tokenizer, name: str = "the tokenizer") -> TextCodec:
        """The codec of ``tokenizer``, built once per tokenizer object (reading a 262,144-token
        vocabulary takes seconds)."""
        codec = _CODECS.get(tokenizer)
        if codec is None:
            codec = _CODECS[tokenizer] = cls(tokenizer, name)
        return codec

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        """The canonical ids of ``text`` (no special tokens added), checked to spell it exactly."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of several texts in one call to the tokenizer."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        out = []
        for text, encoding in zip(texts, encodings, strict=True):
            ids = encoding.ids
            spelled = b"".join(self.pieces[i] for i in ids)
            if spelled != text.encode("utf-8"):
                raise ValueError(self._lossy_message(text, spelled))
            out.append(ids)
        return out

    def first_tokens(self, pieces: Sequence[bytes]) -> list[int]:
        """For each byte string, the first token of its canonical encoding (``-1`` for ``b""``).

        A string that is not valid UTF-8 (part of a character) is cut to its longest valid
        prefix; with none, it maps to this tokenizer's token for its first byte (-1 if it has none).
        """
        texts, where, out = [], [], [-1] * len(pieces)
        for k, piece in enumerate(pieces):
            text = _valid_prefix(piece)
            if text:
                texts.append(text)
                where.append(k)
            elif piece:
                out[k] = self.byte_token.get(piece[0], -1)
        for k, encoding in zip(where, self._backend.encode_batch(texts, add_special_tokens=False), strict=True):
            out[k] = encoding.ids[0] if encoding.ids else -1
        return out

    def encode_pieces(self, pieces: Sequence[bytes], *, probe: str = "") -> list[tuple[list[int], list[int]]]:
        """For each byte string (a token of another tokenizer), ``(ids, token ends)`` of its canonical
        encoding here, followed by ``probe`` (e.g. a letter: GPT-2-style tokenizers give the last
        space of a run to the next word, so ``"  "`` alone is one token but ``" "`` before a word),
        keeping the tokens that end inside the string. ``([], [])`` for strings that are not UTF-8
        text (part of a character) or empty."""
        texts, where = [], []
        for k, piece in enumerate(pieces):
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text:
                texts.append(text + probe)
                where.append(k)
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in pieces]
        for k, encoding in zip(where, self._backend.encode_batch(texts, add_special_tokens=False), strict=True):
            size, ids, ends, at = len(pieces[k]), [], [], 0
            for i in encoding.ids:
                at += len(self.pieces[i])
                if at > size:
                    break
                ids.append(i)
                ends.append(at)
            out[k] = (ids, ends)
        return out

    @cached_property
    def byte_token(self) -> dict[int, int]:
        """``{byte: id}`` of the tokens that are exactly one byte."""
        singles: dict[int, int] = {}
        for i, piece in enumerate(self.pieces):
            if len(piece) == 1 and i not in self.special_ids:
                singles.setdefault(piece[0], i)
        return singles

    def token_ends(self, ids: Sequence[int]) -> list[int]:
        """The byte offset at which each token of ``ids`` ends (special tokens: zero width)."""
        ends, at = [], 0
        for i in ids:
            at += len(self.pieces[i])
            ends.append(at)
        return ends

    def text_of(self, ids: Sequence[int]) -> bytes:
        """The bytes ``ids`` spell (special tokens spell nothing)."""
        return b"".join(self.pieces[i] for i in ids)

    def _lossy_message(self, text: str, spelled: bytes) -> str:
        data = text.encode("utf-8")
        at = next((k for k, (a, b) in enumerate(zip(data, spelled)) if a != b), min(len(data), len(spelled)))
        start = len(data[:at].decode("utf-8", errors="ignore"))
        snippet = text[max(0, start - 10): start + 10]
        return (
            f"{self.name} cannot encode the text {snippet!r} losslessly (at character {start} of {len(text)}: its "
            f"tokens spell {spelled[max(0, at - 10): at + 10]!r}): the models cannot be aligned on this text. "
            "Remove or replace those characters"
        )


def _scheme(spec: dict) -> str:
    decoder = spec.get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    kinds = {part.get("type") for part in parts if part}
    if "ByteLevel" in kinds:
        return "byte-level"
    if kinds & {"Metaspace", "Replace", "ByteFallback"}:
        return "sentencepiece"
    raise ValueError(
        f"cannot read the bytes of this tokenizer's tokens: its decoder is {sorted(k for k in kinds if k) or 'none'}; "
        "byte-level BPE (GPT-2 style) and SentencePiece-style (Metaspace or '▁' replacement, byte fallback) "
        "are supported"
    )


def _pieces(tokenizer, spec: dict, scheme: str) -> list[bytes | None]:
    """Each id's bytes; ``None`` for special tokens."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
    strings: list[str | None] = [None] * size
    for token, i in vocab.items():
        strings[i] = token
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    alphabet = byte_level_alphabet() if scheme == "byte-level" else None
    pieces: list[bytes | None] = []
    for i, token in enumerate(strings):
        if token is None or i in special:
            pieces.append(None)
        elif alphabet is not None:
            try:
                pieces.append(bytes(alphabet[c] for c in token))
            except KeyError:  # an added, non-special token stored as plain text
                pieces.append(token.encode("utf-8"))
        else:
            byte = _BYTE_TOKEN.match(token)
            pieces.append(bytes([int(byte.group(1), 16)]) if byte else token.replace("▁", " ").encode("utf-8"))
    return pieces


def _start_ids(tokenizer) -> list[int]:
    """The ids a document starts with: the tokenizer's own prefix (Gemma's ``<bos>``), else
    ``<|endoftext|>`` where the vocabulary has it (the document separator of GPT-2-style
    pretraining data, SmolLM2's and Qwen's included, whose BOS is a chat marker), else its BOS,
    else its EOS."""
    with_special = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    cut = len(with_special) - len(plain)
    if cut > 0 and with_special[cut:] == plain:
        return with_special[:cut]
    separator = tokenizer.get_vocab().get("<|endoftext|>")
    if separator is not None:
        return [separator]
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return [value]
    raise ValueError("the tokenizer has no BOS or EOS token to start a document with")


def _valid_prefix(piece: bytes) -> str:
    """The longest prefix of ``piece`` that is valid UTF-8, decoded."""
    for cut in range(len(piece), max(-1, len(piece) - 4), -1):
        try:
            return piece[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return ""
