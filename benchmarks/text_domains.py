"""Held-out text of four domains that ship with every CPython, with a separate fit split for each.

    python benchmarks/text_domains.py --out DIR     # writes DIR/<domain>/{fit,heldout}.txt

Sources (all under the PSF licence, which allows redistribution), cut deterministically (fixed
seed 0, documents never shared between the two splits):

* ``prose``: the help topics of ``pydoc_data.topics`` (technical English);
* ``code``: Python source files of the standard library;
* ``legal``: CPython's ``LICENSE.txt`` (licence text: the first ~3,000 characters fit, the rest
  is held out);
* ``changelog``: IDLE's ``NEWS.txt`` (``idlelib``; release notes with issue numbers and names).

Each split is a list of documents of at most :data:`DOCUMENT_CHARS` characters cut at blank
lines, each scored from its own start token. Fit splits are ~3,000 characters, held-out splits
~12,000: nothing is fitted or tuned on the held-out text.
"""

from __future__ import annotations

import argparse
import random
import sysconfig
from pathlib import Path

FIT_CHARS, HELDOUT_CHARS, DOCUMENT_CHARS = 3_000, 12_000, 4_000
SEED = 0
DOMAINS = ("prose", "code", "legal", "changelog")
SEPARATOR = "\n\x1e\n"  # between documents in a split file (ASCII record separator)


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _documents(texts: list[str], budget: int) -> tuple[list[str], int]:
    """Documents of at most DOCUMENT_CHARS characters (whole paragraphs) taken from ``texts`` in
    order until ``budget`` characters, and how many texts they used; a paragraph longer than a
    document is cut at a line. Documents never span two texts."""
    docs, used = [], 0
    for k, text in enumerate(texts):
        current = ""
        for para in _paragraphs(text):
            para = para[:DOCUMENT_CHARS].rsplit("\n", 1)[0] if len(para) > DOCUMENT_CHARS else para
            if current and len(current) + 2 + len(para) > DOCUMENT_CHARS:
                docs.append(current)
                used, current = used + len(current), ""
                if used >= budget:
                    return docs, k + 1
            current = f"{current}\n\n{para}" if current else para
        if current:
            docs.append(current)
            used += len(current)
            if used >= budget:
                return docs, k + 1
    return docs, len(texts)


def _split(sources: list[str]) -> dict[str, list[str]]:
    """The first sources fill the fit split; the following ones (never the same) the held-out one."""
    fit, used = _documents(sources, FIT_CHARS)
    heldout, _ = _documents(sources[used:], HELDOUT_CHARS)
    return {"fit": fit, "heldout": heldout}


def _one_document_split(text: str) -> dict[str, list[str]]:
    """One long document: its first paragraphs up to ~FIT_CHARS fit, the rest is held out."""
    paragraphs, fit, k = _paragraphs(text), [], 0
    while k < len(paragraphs) and sum(map(len, fit)) < FIT_CHARS:
        fit.append(paragraphs[k])
        k += 1
    return {"fit": _documents(["\n\n".join(fit)], FIT_CHARS)[0],
            "heldout": _documents(["\n\n".join(paragraphs[k:])], HELDOUT_CHARS)[0]}


def build_domains() -> dict[str, dict[str, list[str]]]:
    """``{domain: {"fit": [documents], "heldout": [documents]}}``, deterministic."""
    from pydoc_data.topics import topics

    rng = random.Random(SEED)
    keys = sorted(topics)
    rng.shuffle(keys)
    stdlib = _stdlib()
    files = sorted(p for p in stdlib.glob("*.py") if not p.name.startswith("_"))
    rng.shuffle(files)
    code = [p.read_text(encoding="utf-8")[:DOCUMENT_CHARS * 2] for p in files[:40]]
    news = stdlib / "idlelib" / "NEWS.txt"
    license_text = stdlib / "LICENSE.txt"
    for path in (news, license_text):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not installed with this Python; it is one of the evaluation sources")
    return {
        "prose": _split([topics[k] for k in keys]),
        "code": _split(code),
        "legal": _one_document_split(license_text.read_text(encoding="utf-8")),
        "changelog": _one_document_split(news.read_text(encoding="utf-8")),
    }


def write_domains(out: str | Path) -> Path:
    out = Path(out)
    for domain, splits in build_domains().items():
        (out / domain).mkdir(parents=True, exist_ok=True)
        for split, docs in splits.items():
            (out / domain / f"{split}.txt").write_text(SEPARATOR.join(docs), encoding="utf-8")
    return out


def read_documents(path: str | Path) -> list[str]:
    """The documents of a split file written by :func:`write_domains`."""
    return [d for d in Path(path).read_text(encoding="utf-8").split(SEPARATOR) if d.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/domains", help="directory to write the splits into")
    args = parser.parse_args(argv)
    out = write_domains(args.out)
    for domain in DOMAINS:
        sizes = {s: sum(map(len, read_documents(out / domain / f"{s}.txt"))) for s in ("fit", "heldout")}
        print(f"{domain:10s} fit {sizes['fit']:6d} chars, held out {sizes['heldout']:6d} chars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
