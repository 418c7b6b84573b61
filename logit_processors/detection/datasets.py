"""The data sets shipped for attack detection (``logit_processors/detection/data/``), and how they were made.

Benign traffic, one file per category (:data:`BENIGN_FILES`; built by
``scripts/build_benign_sets.py`` from material that ships offline, see its docstring):

``chat``
    458 short chat requests written for this project, of varied style (factual questions,
    how-to, writing, code, math, advice, rewrites, casual chat, role-play, typos ...).
``code``
    ask about / fix / explain a snippet: Python from the standard library, C from CPython's
    headers, JavaScript from matplotlib's ``mpl.js``.
``multilingual``
    ordinary requests in 14 languages and 7 scripts (Latin, Cyrillic, Greek, Han, Kana,
    Hangul, Arabic, Devanagari), written for this project.
``document``
    a pasted document of 500-4,000 characters (Markdown, module docstrings, changelogs, logs,
    JSON) and a question about it.
``multiturn``
    chats of two or three turns; the last user message is scored.

Every row has a split (:func:`split_of`: a hash of its category and key, so a row never
changes split when others are added): ``fit`` (45%: what a detector's baseline and threshold
are fitted on), ``dev`` (15%: for choosing a method's design) and ``test`` (40%: held out,
nothing is fitted or tuned on it). The chat requests the attack sets extend (the original
``eval`` split) are all ``test``.

Attack sets (:data:`ATTACK_SETS`), each row ``base + suffix = text`` with a split (``dev``: for
fitting the detector's probe; ``test``: held out). ``scripts/build_attack_sets.py``,
``scripts/optimize_suffixes.py`` and ``scripts/adaptive_attack.py`` made them:

``random``
    held-out chat requests + a suffix of 8-24 uniformly random printable-ASCII tokens.
``random_harmful``
    harmful behaviours (AdvBench-style titles written for this project) + random tokens.
``optimized``
    held-out chat requests + a suffix found by a small GCG search against SmolLM2 maximizing
    an affirmative first token.
``gcg_harmful``
    held-out harmful behaviours + a GCG suffix forcing the behaviour's target ("Sure, here is
    ..."); ``forced``: whether greedy decoding then starts with the target.
``adaptive_perplexity``, ``adaptive_detector``
    the same search with a perplexity penalty (AutoDAN-style), or with the shipped detector's
    score in its objective (white box).
``fluent``
    held-out chat requests + a fluent appended instruction (prompt-injection style); ``dev``
    rows use other instructions on dev requests.
``jailbreak``
    templates in the style of in-the-wild jailbreaks (role-play, developer mode, fiction, ...)
    around harmful behaviours; split by template.
``detector_smollm2.json``
    a :class:`~logit_processors.detection.Detector` fitted on the ``fit`` split with SmolLM2
    (``scripts/fit_detector.py``), with the model's identity; :func:`default_detector` loads it.

The suffix's characters are ``text[len(base):]``, which is how span localization knows which
tokens were inserted.

Example:
    >>> from logit_processors.detection.datasets import ATTACK_SETS, load_attacks, load_benign, split_of
    >>> sorted({p.category for p in load_benign("test")})
    ['chat', 'code', 'document', 'multilingual', 'multiturn']
    >>> split_of("code", "Lib/textwrap.py:1 dedent")   # the same key, the same split, always
    'test'
    >>> a = load_attacks("random")[0]
    >>> a.text == a.base + a.suffix
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: Attack set name -> data file.
ATTACK_SETS: dict[str, str] = {
    "random": "attacks_random.jsonl",
    "random_harmful": "attacks_random_harmful.jsonl",
    "optimized": "attacks_optimized.jsonl",
    "gcg_harmful": "attacks_gcg_harmful.jsonl",
    "adaptive_perplexity": "attacks_adaptive_perplexity.jsonl",
    "adaptive_detector": "attacks_adaptive_detector.jsonl",
    "fluent": "attacks_fluent.jsonl",
    "jailbreak": "attacks_jailbreak.jsonl",
}
ATTACK_SPLITS: tuple[str, ...] = ("dev", "test")
#: The attack sets whose ``dev`` rows the detector's probe is fitted on (fluent attacks; the
#: ``test`` rows, other instructions and templates, are held out for the evaluation).
PROBE_ATTACK_SETS: tuple[str, ...] = ("fluent", "jailbreak")
#: Benign category -> data file.
BENIGN_FILES: dict[str, str] = {
    "chat": "benign_prompts.jsonl",
    "code": "benign_code.jsonl",
    "multilingual": "benign_multilingual.jsonl",
    "document": "benign_documents.jsonl",
    "multiturn": "benign_multiturn.jsonl",
}
CATEGORIES: tuple[str, ...] = tuple(BENIGN_FILES)
#: Named model -> the detector fitted for it that ships with the package.
DETECTOR_FILES: dict[str, str] = {"smollm2": "detector_smollm2.json"}
#: Splits and the share of rows :func:`split_of` gives each.
SPLIT_SHARES: dict[str, float] = {"fit": 0.45, "dev": 0.15, "test": 0.40}
SPLITS: tuple[str, ...] = tuple(SPLIT_SHARES)


def split_of(category: str, key: str) -> str:
    """The split of a row: where ``sha256(category, key)`` falls in [0, 1), cut by :data:`SPLIT_SHARES`.

    A hash, not a shuffle: a row keeps its split when rows are added or removed, and rows that
    share material (one snippet asked about twice, one first turn with two follow-ups) share
    the key and so the split.
    """
    digest = hashlib.sha256(f"{category}\0{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for split, share in SPLIT_SHARES.items():
        if u < share:
            return split
        u -= share
    return SPLITS[-1]


@dataclass(frozen=True)
class BenignPrompt:
    """One benign request: ``text`` (the scored user message) and ``messages`` (the whole chat
    for a multi-turn row, else ``None``); :attr:`prompt` is what a detector scores."""

    id: str
    category: str
    kind: str
    split: str
    text: str
    messages: tuple[dict, ...] | None = None

    @property
    def prompt(self) -> str | list[dict]:
        """The request as :meth:`Detector.score` takes it: the text, or the list of messages."""
        return self.text if self.messages is None else [dict(m) for m in self.messages]


@dataclass(frozen=True)
class AttackPrompt:
    """One attacked prompt: ``text = base + suffix`` (``base`` empty when the whole prompt is
    the attack, e.g. a jailbreak template); ``split``: ``dev`` (tuning) or ``test`` (held out)."""

    id: str
    base_id: str
    base: str
    suffix: str
    text: str
    split: str = "test"
    forced: bool | None = None  # suffix attacks on a target: whether the greedy reply starts with it

    @property
    def suffix_char(self) -> int:
        """Where the inserted suffix starts in :attr:`text`."""
        return len(self.base)


def data_path(name: str):
    """The path of a file in ``logit_processors/data/`` (a ``Traversable``)."""
    return resources.files("logit_processors.detection") / "data" / name


def _read_jsonl(name: str) -> list[dict]:
    path = data_path(name)
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_benign(split: str | None = None, category: str | Sequence[str] | None = None) -> list[BenignPrompt]:
    """The benign requests of ``split`` (one of :data:`SPLITS`; ``None``: all) and ``category``
    (one of :data:`CATEGORIES`, several, or ``None``: all), in category then file order."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None; got {split!r}")
    categories = CATEGORIES if category is None else (category,) if isinstance(category, str) else tuple(category)
    unknown = [c for c in categories if c not in BENIGN_FILES]
    if unknown:
        raise ValueError(f"category must be one of {CATEGORIES} (or a list of them); got {unknown[0]!r}")
    rows = []
    for name in categories:
        for r in _read_jsonl(BENIGN_FILES[name]):
            if split is None or r["split"] == split:
                messages = tuple(r["messages"]) if "messages" in r else None
                text = r["text"] if messages is None else messages[-1]["content"]
                rows.append(BenignPrompt(r["id"], name, r["kind"], r["split"], text, messages))
    return rows


def load_attacks(name: str, split: str | None = None) -> list[AttackPrompt]:
    """The attack set ``name`` (one of :data:`ATTACK_SETS`), its rows of ``split`` (one of
    :data:`ATTACK_SPLITS`; ``None``: all)."""
    if name not in ATTACK_SETS:
        raise ValueError(f"attack set must be one of {sorted(ATTACK_SETS)}; got {name!r}")
    if split is not None and split not in ATTACK_SPLITS:
        raise ValueError(f"split must be one of {ATTACK_SPLITS} or None; got {split!r}")
    rows = [r for r in _read_jsonl(ATTACK_SETS[name]) if split is None or r["split"] == split]
    attacks = [AttackPrompt(r["id"], r["base_id"], r["base"], r["suffix"], r["text"], r["split"], r.get("forced"))
               for r in rows]
    for a in attacks:
        if a.text != a.base + a.suffix:
            raise ValueError(f"{ATTACK_SETS[name]}: row {a.id} has text != base + suffix")
    return attacks


def read_prompts(path: str | os.PathLike) -> list[str | list[dict]]:
    """Benign prompts from a file, e.g. to refit a detector on your own traffic
    (``Detector.fit(model, tokenizer, read_prompts(path))``, ``logit-processors detect --fit FILE``).

    A ``.jsonl`` file holds one prompt per line: a JSON string, or an object with ``"text"``
    (a user message) or ``"messages"`` (a chat, ``[{"role", "content"}, ...]``; its last message
    is scored). Any other file: one prompt per non-blank line. Raises ``ValueError`` naming the
    line of a malformed entry, or when the file holds no prompt.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.jsonl"
        >>> _ = path.write_text('"Hi there"\\n{"messages": [{"role": "user", "content": "Hello"}]}\\n', encoding="utf-8")
        >>> read_prompts(path)
        ['Hi there', [{'role': 'user', 'content': 'Hello'}]]
    """
    path = Path(path).expanduser()
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts: list[str | list[dict]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from error
        if isinstance(value, dict):
            value = value.get("messages", value.get("text"))
        messages_ok = (isinstance(value, list) and value
                       and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value))
        if not (isinstance(value, str) and value.strip()) and not messages_ok:
            raise ValueError(f"{path}, line {number}: expected a non-empty JSON string, or an object with 'text' (a "
                             "string) or 'messages' (a list of {'role', 'content'})")
        prompts.append(value)
    if not prompts:
        raise ValueError(f"{path} holds no prompt")
    return prompts


def probe_attack_prompts() -> list[str]:
    """The attack prompts the detector's probe is fitted on: the ``dev`` rows of :data:`PROBE_ATTACK_SETS`."""
    return [a.text for name in PROBE_ATTACK_SETS for a in load_attacks(name, "dev")]
