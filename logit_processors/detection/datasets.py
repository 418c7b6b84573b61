"""The data sets shipped for attack detection (``logit_processors/detection/data/``), and how they were made.

``benign_prompts.jsonl``
    458 benign user requests written for this project, of varied style and length (factual
    questions, how-to, writing, code, math, advice, explanations, rewrites, casual chat, long
    multi-sentence requests, role-play, lists and formats, names and numbers, typos and informal
    text, a few non-English requests). Split once, stratified by style, into ``fit`` (225: the
    detector's baseline and thresholds) and ``eval`` (233: held out for evaluation). The splits
    are disjoint by construction (a test checks it).
``attacks_random.jsonl``
    eval requests + a suffix of 8-24 uniformly random printable-ASCII tokens.
``attacks_optimized.jsonl``
    eval requests + a suffix found by ``scripts/optimize_suffixes.py`` (a small GCG search
    against SmolLM2 maximizing an affirmative first token), run once.
``attacks_fluent.jsonl``
    eval requests + a fluent, natural-language appended instruction (prompt-injection style),
    written for this project.
``detector_smollm2.json``
    a :class:`~logit_processors.detection.Detector` fitted on the ``fit`` split with SmolLM2
    (``scripts/fit_detector.py``), with the model's identity; :func:`default_detector` loads it.

Every attack row has ``base_id`` (the eval request it extends), ``base``, ``suffix`` and ``text``
(``base + suffix``): the suffix's characters are ``text[len(base):]``, which is how span
localization knows which tokens were inserted.

Example:
    >>> from logit_processors.detection.datasets import ATTACK_SETS, load_attacks, load_benign
    >>> len(load_benign("fit")) >= 200 and len(load_benign("eval")) >= 200
    True
    >>> sorted(ATTACK_SETS)
    ['fluent', 'optimized', 'random']
    >>> a = load_attacks("random")[0]
    >>> a.text == a.base + a.suffix
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

#: Attack set name -> data file.
ATTACK_SETS: dict[str, str] = {
    "random": "attacks_random.jsonl",
    "optimized": "attacks_optimized.jsonl",
    "fluent": "attacks_fluent.jsonl",
}
BENIGN_FILE = "benign_prompts.jsonl"
#: Named model -> the detector fitted for it that ships with the package.
DETECTOR_FILES: dict[str, str] = {"smollm2": "detector_smollm2.json"}
SPLITS = ("fit", "eval")


@dataclass(frozen=True)
class BenignPrompt:
    id: str
    split: str
    style: str
    text: str


@dataclass(frozen=True)
class AttackPrompt:
    id: str
    base_id: str
    base: str
    suffix: str
    text: str

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


def load_benign(split: str | None = None) -> list[BenignPrompt]:
    """The benign requests of ``split`` (``"fit"`` or ``"eval"``; ``None``: all)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None; got {split!r}")
    rows = [BenignPrompt(r["id"], r["split"], r["style"], r["text"]) for r in _read_jsonl(BENIGN_FILE)]
    return [r for r in rows if split is None or r.split == split]


def load_attacks(name: str) -> list[AttackPrompt]:
    """The attack set ``name`` (one of :data:`ATTACK_SETS`)."""
    if name not in ATTACK_SETS:
        raise ValueError(f"attack set must be one of {sorted(ATTACK_SETS)}; got {name!r}")
    rows = _read_jsonl(ATTACK_SETS[name])
    attacks = [AttackPrompt(r["id"], r["base_id"], r["base"], r["suffix"], r["text"]) for r in rows]
    for a in attacks:
        if a.text != a.base + a.suffix:
            raise ValueError(f"{ATTACK_SETS[name]}: row {a.id} has text != base + suffix")
    return attacks


def default_detector(model, tokenizer, name: str = "smollm2"):
    """The shipped detector for the named model (``Detector.load`` checks that ``model`` is it)."""
    from .detector import Detector

    if name not in DETECTOR_FILES:
        raise ValueError(f"no detector ships for {name!r} (only for {sorted(DETECTOR_FILES)}); fit one with "
                         "Detector.fit(model, tokenizer, [p.text for p in load_benign('fit')])")
    with resources.as_file(data_path(DETECTOR_FILES[name])) as path:
        return Detector.load(path, model, tokenizer)
