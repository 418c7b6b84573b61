"""Build the benign traffic sets for attack detection (run once; the output is stored as data).

A detector fitted on short English questions learns "unlike a short English question", not
"manipulated". These sets are the traffic a served model sees, built from material that ships
offline and may be redistributed:

``code``
    ask about / fix / explain / review a snippet (the asks: ``benign_requests.CODE_ASKS``):
    Python functions from the standard library's source, C from CPython's public headers
    (``sysconfig.get_paths()["include"]``), JavaScript from matplotlib's ``web_backend/js/mpl.js``
    (Python Software Foundation License / matplotlib License, both permissive; the snippets
    keep their origin in ``source``).
``multilingual``
    ordinary requests in 14 languages and 7 scripts, written for this project
    (``benign_requests.MULTILINGUAL``).
``document``
    a pasted document of 500-4,000 characters and a question about it (before or after):
    Markdown built from ``pydoc_data.topics``, module docstrings of the standard library,
    changelogs, application logs and JSON built from the standard library's names and
    docstrings (fixed seed).
``multiturn``
    chats of two or three turns whose last user message is scored: first turns written for
    this project (``benign_requests.FIRST_TURNS``) or a question about a pydoc topic answered
    with the topic's text, then a follow-up (``benign_requests.FOLLOW_UPS``).
``chat``
    the project's short chat requests (``benign_prompts.jsonl``, 458, written for it).

Each row gets its split from :func:`logit_processors.detection.datasets.split_of` (a hash of
its category and key: the same row always lands in the same split, whatever else is added);
rows that share material (a snippet, a first turn) share the key, so no material crosses
splits. ``test`` is held out: nothing is fitted or tuned on it.

    python scripts/build_benign_sets.py     # writes logit_processors/detection/data/benign_*.jsonl
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import random
import re
import sys
import sysconfig
import textwrap
from pathlib import Path

from benign_requests import CODE_ASKS, DOCUMENT_ASKS, DOCUMENT_LEADS, FIRST_TURNS, FOLLOW_UPS, MULTILINGUAL
from pydoc_data.topics import topics

from logit_processors.detection.datasets import BENIGN_FILES, data_path, split_of

SEED = 15
DATA = Path(__file__).resolve().parent.parent / "logit_processors" / "detection" / "data"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
DOC_MIN, DOC_MAX = 500, 4000  # characters of a pasted document (the question comes on top)

#: Standard-library modules snippets and docstrings are drawn from (pure Python, varied).
MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "colorsys", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "difflib", "email.utils", "enum", "fnmatch", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "heapq", "hmac", "html", "http.cookies",
    "imaplib", "inspect", "ipaddress", "json.decoder", "json.encoder", "locale", "logging", "mailbox",
    "mimetypes", "netrc", "ntpath", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pprint",
    "quopri", "random", "reprlib", "sched", "secrets", "selectors", "shlex", "shutil", "smtplib", "socketserver",
    "statistics", "string", "subprocess", "tabnanny", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "urllib.parse", "uuid", "wave", "weakref", "zipfile",
)


# --------------------------------------------------------------------------------------------
# Code


def python_functions(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` (origin, source) functions of 5-40 lines from :data:`MODULES`, docstrings kept."""
    found = []
    for name in MODULES:
        path = Path(importlib.import_module(name).__file__)
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and 5 <= node.end_lineno - node.lineno + 1 <= 40:
                text = textwrap.dedent(ast.get_source_segment(source, node, padded=True))
                if 150 <= len(text) <= 1800:
                    found.append((f"Lib/{path.relative_to(STDLIB)}:{node.lineno} {node.name}", text))
    return rng.sample(found, n)


def c_snippets(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` static inline functions, structs and macro groups from CPython's public headers."""
    include = Path(sysconfig.get_paths()["include"])
    found = []
    for path in sorted(include.rglob("*.h")):
        text = path.read_text(encoding="utf-8", errors="replace")
        origin = f"Include/{path.relative_to(include)}"
        for match in re.finditer(r"^(static inline [^;{]*\{|typedef struct [^;{]*\{|struct \w+ \{)", text, re.M):
            block = _braced(text, match.start())
            if block and 120 <= len(block) <= 1500:
                found.append((f"{origin}:{text.count(chr(10), 0, match.start()) + 1}", block))
        for match in re.finditer(r"(?:^#define [^\n]*(?:\\\n[^\n]*)*\n){3,8}", text, re.M):
            if 150 <= len(match.group()) <= 1500:
                found.append((f"{origin}:{text.count(chr(10), 0, match.start()) + 1}", match.group().rstrip()))
    return rng.sample(found, n)


def js_functions(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Up to ``n`` function definitions from matplotlib's mpl.js (matplotlib License)."""
    import matplotlib

    path = Path(matplotlib.__file__).parent / "backends" / "web_backend" / "js" / "mpl.js"
    text = path.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^mpl\.[\w.]+ = function[^{]*\{", text, re.M):
        block = _braced(text, match.start())
        if block and 150 <= len(block) <= 1800:
            found.append((f"matplotlib/backends/web_backend/js/mpl.js:{text.count(chr(10), 0, match.start()) + 1}",
                          block))
    return rng.sample(found, min(n, len(found)))


def _braced(text: str, start: int) -> str | None:
    """From ``start`` through the brace that closes the first ``{`` after it."""
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[start : j + 1] + (";" if text[j + 1 : j + 2] == ";" else "")
    return None


def code_requests(rng: random.Random) -> list[dict]:
    rows = []
    snippets = ([("python", "Python", *s) for s in python_functions(rng, 150)]
                + [("c", "C", *s) for s in c_snippets(rng, 60)]
                + [("javascript", "JavaScript", *s) for s in js_functions(rng, 40)])
    for k, (fence, lang, origin, code) in enumerate(snippets):
        placement, ask = rng.choice(CODE_ASKS)
        ask = ask.format(lang=lang)
        block = f"```{fence}\n{code.rstrip()}\n```" if rng.random() < 0.7 else code.rstrip()
        text = f"{ask}\n\n{block}" if placement == "before" else f"{block}\n\n{ask}"
        rows.append({"id": f"code{k:03d}", "category": "code", "kind": fence, "source": origin,
                     "key": origin, "text": text})
    return rows


# --------------------------------------------------------------------------------------------
# Documents


def markdown_documents(rng: random.Random) -> list[tuple[str, str, str]]:
    docs = []
    for name in sorted(topics):
        lines, out, in_code = topics[name].splitlines(), [], False
        title = lines[0].strip() if lines and lines[0].strip() else name
        out.append(f"# {title}")
        for line in lines[1:]:
            code = line.startswith("   ") and line.strip() != ""
            if code and not in_code:
                out.append("```")
            if not code and in_code and line.strip():
                out.append("```")
            in_code = code if line.strip() else in_code
            if re.fullmatch(r"\*+|=+|-+", line.strip()):
                if out and not out[-1].startswith("#"):
                    out[-1] = "## " + out[-1].strip()
                continue
            out.append(line[3:] if code else line)
        if in_code:
            out.append("```")
        docs.append(("markdown", f"pydoc_data.topics[{name!r}]", _cut("\n".join(out), rng)))
    return docs


def docstring_documents(rng: random.Random) -> list[tuple[str, str, str]]:
    docs = []
    for name in MODULES:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        if len(doc) >= DOC_MIN:
            docs.append(("docstring", f"{name}.__doc__", _cut(doc, rng)))
    return docs


def _api(rng: random.Random, k: int) -> list[tuple[str, str, str]]:
    """``k`` (module, function, summary) triples: public functions with a one-line docstring summary."""
    entries = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            obj = getattr(module, attr)
            if not attr.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__:
                summary = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ").strip()
                if 20 <= len(summary) <= 160:
                    entries.append((name, attr, summary))
    return rng.sample(entries, k)


def changelog_documents(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    docs = []
    verbs = {"Added": "Add", "Changed": "Change", "Fixed": "Fix", "Deprecated": "Deprecate", "Removed": "Remove"}
    for k in range(n):
        project = rng.choice(["toolkit", "datapipe", "webcore", "fileops", "pyutils", "netkit"])
        major, minor = rng.randint(0, 4), rng.randint(0, 20)
        parts = [f"# Changelog for {project}", "", "All notable changes to this project are documented here."]
        for release in range(rng.randint(2, 5)):
            version = f"{major}.{minor - release if minor >= release else 0}.{rng.randint(0, 9)}"
            date = f"20{rng.randint(18, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            parts += ["", f"## [{version}] - {date}"]
            for section in rng.sample(sorted(verbs), rng.randint(1, 3)):
                parts += ["", f"### {section}"]
                for module, func, summary in _api(rng, rng.randint(1, 4)):
                    issue = f" (#{rng.randint(100, 9999)})" if rng.random() < 0.6 else ""
                    parts.append(f"- {verbs[section]} `{module}.{func}()`: {summary[0].lower() + summary[1:]}{issue}")
        docs.append(("changelog", "changelog built from standard-library docstrings", _cut("\n".join(parts), rng)))
    return docs


def log_documents(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    events = [
        ("INFO", "{module}", "started worker {n} (pid {pid})"),
        ("INFO", "http.server", '{ip} - - "GET /{path} HTTP/1.1" 200 {size}'),
        ("INFO", "http.server", '{ip} - - "POST /api/{path} HTTP/1.1" 201 {size}'),
        ("DEBUG", "{module}", "cache hit for key {key}"),
        ("DEBUG", "sqlite3", "query took {ms} ms: SELECT * FROM {table} WHERE id = ?"),
        ("INFO", "scheduler", "job {key} finished in {ms} ms"),
        ("WARNING", "{module}", "retrying request to {ip} ({n}/3)"),
        ("WARNING", "shutil", "disk usage at {pct}% on /var/lib/{table}"),
        ("ERROR", "{module}", "{exc}: {message}"),
        ("INFO", "smtplib", "sent notification to user{n}@example.com"),
        ("WARNING", "http.server", '{ip} - - "GET /{path} HTTP/1.1" 404 {size}'),
    ]
    exceptions = [(e.__name__, (e.__doc__ or "").split("\n")[0].rstrip(".")) for e in
                  (ConnectionResetError, TimeoutError, FileNotFoundError, PermissionError, ValueError, KeyError,
                   MemoryError, BrokenPipeError, UnicodeDecodeError, OSError)]
    docs = []
    for _ in range(n):
        lines, day = [], f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        hour, minute, second = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        for _ in range(rng.randint(12, 45)):
            second += rng.randint(0, 40)
            minute, second = minute + second // 60, second % 60
            hour, minute = (hour + minute // 60) % 24, minute % 60
            level, logger, message = rng.choices(events, weights=[3, 6, 3, 3, 2, 3, 1, 1, 1, 1, 1])[0]
            exc, why = rng.choice(exceptions)
            fields = {"module": rng.choice(MODULES), "n": rng.randint(1, 9), "pid": rng.randint(1000, 65000),
                      "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                      "path": rng.choice(["", "index.html", "static/app.css", "users", "orders/42", "health"]),
                      "size": rng.randint(120, 90000), "key": f"{rng.getrandbits(32):08x}", "ms": rng.randint(1, 900),
                      "table": rng.choice(["users", "orders", "sessions", "events"]), "pct": rng.randint(80, 99),
                      "exc": exc, "message": why.lower()}
            logger = logger.format(**fields)
            lines.append(f"{day} {hour:02d}:{minute:02d}:"
                         f"{second:02d},{rng.randint(0, 999):03d} {level:<7} [{logger}] {message.format(**fields)}")
        docs.append(("log", "application log built from standard-library names", _cut("\n".join(lines), rng)))
    return docs


def json_documents(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    docs = []
    for k in range(n):
        if k % 2 == 0:
            entries = [{"module": m, "function": f, "summary": s, "stable": rng.random() < 0.8}
                       for m, f, s in _api(rng, rng.randint(4, 14))]
            value = {"api_version": f"{rng.randint(1, 3)}.{rng.randint(0, 9)}", "entries": entries}
        else:
            value = {"service": rng.choice(["billing", "search", "auth", "reports"]),
                     "replicas": rng.randint(1, 8), "env": {"LOG_LEVEL": rng.choice(["INFO", "DEBUG", "WARNING"]),
                                                             "TIMEOUT_S": rng.randint(5, 120)},
                     "users": [{"id": rng.randint(1, 99999), "name": rng.choice(["ana", "bo", "chen", "dara", "eli",
                                                                                  "femi", "gus", "hana"]),
                                "roles": rng.sample(["admin", "reader", "writer", "billing"], rng.randint(1, 3)),
                                "last_login": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}
                               for _ in range(rng.randint(3, 16))]}
        docs.append(("json", "JSON built from standard-library names", _cut(json.dumps(value, indent=2), rng, json_=True)))
    return docs


def _cut(text: str, rng: random.Random, json_: bool = False) -> str:
    """At most a random length in [DOC_MIN, DOC_MAX] characters, cut at a line end (JSON: whole)."""
    text = text.strip()
    limit = rng.randint(DOC_MIN, DOC_MAX)
    if len(text) <= limit or json_:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut >= DOC_MIN else limit].rstrip()


def document_requests(rng: random.Random) -> list[dict]:
    docs = (markdown_documents(rng) + docstring_documents(rng) + changelog_documents(rng, 40)
            + log_documents(rng, 40) + json_documents(rng, 40))
    rows = []
    for k, (kind, origin, doc) in enumerate(d for d in docs if DOC_MIN <= len(d[2]) <= DOC_MAX):
        ask = rng.choice(DOCUMENT_ASKS[kind] + DOCUMENT_ASKS["any"])
        if rng.random() < 0.75:
            text = f"{doc}\n\n{ask}"
        else:
            text = f"{rng.choice(DOCUMENT_LEADS)}\n\n{doc}\n\n{ask}"
        rows.append({"id": f"doc{k:03d}", "category": "document", "kind": kind, "source": origin,
                     "key": f"{kind}:{k}", "text": text})
    return rows


# --------------------------------------------------------------------------------------------
# Other languages, multi-turn chats, short chat


def multilingual_requests() -> list[dict]:
    return [{"id": f"ml_{lang}{k:02d}", "category": "multilingual", "kind": lang, "source": "written for this project",
             "key": text, "text": text}
            for lang, texts in MULTILINGUAL.items() for k, text in enumerate(texts)]


def multiturn_chats(rng: random.Random) -> list[dict]:
    firsts = [("written", q, a) for q, a in FIRST_TURNS]
    for name in sorted(topics):
        paragraphs = [p.strip().replace("\n", " ") for p in topics[name].split("\n\n") if len(p.strip()) > 80]
        if paragraphs:
            title = topics[name].splitlines()[0].strip() or name
            answer = re.sub(r"\s+", " ", paragraphs[0])[:600]
            firsts.append(("pydoc", f"In Python, what is {title[0].lower() + title[1:]}?", answer))
    rows = []
    for k, (origin, question, answer) in enumerate(firsts):
        for j, follow_up in enumerate(rng.sample(FOLLOW_UPS, 2)):
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            if rng.random() < 0.3:  # a third turn: an earlier follow-up, answered briefly
                earlier = rng.choice([f for f in FOLLOW_UPS if f != follow_up])
                messages += [{"role": "user", "content": earlier},
                             {"role": "assistant", "content": "Sure. " + answer.split(". ")[0].rstrip(".") + "."}]
            messages.append({"role": "user", "content": follow_up})
            rows.append({"id": f"turn{k:03d}{'ab'[j]}", "category": "multiturn", "kind": f"{len(messages) // 2 + 1}-turn",
                         "source": "written for this project" if origin == "written" else "pydoc_data.topics",
                         "key": question, "messages": messages})
    return rows


def chat_requests() -> list[dict]:
    rows = []
    with data_path(BENIGN_FILES["chat"]).open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            # The original "eval" split stays held out ("test"), marked "attack_base": the attack
            # sets extend those requests. The original "fit" split is re-split by the rule.
            attack_base = r.get("attack_base", r["split"] == "eval")
            rows.append({"id": r["id"], "category": "chat", "kind": r.get("kind", r.get("style")),
                         "source": "written for this project", "key": r["id"], "text": r["text"],
                         "attack_base": attack_base})
    return rows


def main() -> int:
    rng = random.Random(SEED)
    sets = {"code": code_requests(rng), "document": document_requests(rng), "multilingual": multilingual_requests(),
            "multiturn": multiturn_chats(rng), "chat": chat_requests()}
    for category, rows in sets.items():
        for row in rows:
            row["split"] = "test" if row.get("attack_base") else split_of(category, row["key"])
        ordered = [{k: row[k] for k in ("id", "category", "kind", "split", "source", "key", "text", "messages",
                                        "attack_base") if row.get(k) not in (None, False)} for row in rows]
        with open(DATA / BENIGN_FILES[category], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in ordered)
        counts = {s: sum(r["split"] == s for r in ordered) for s in ("fit", "dev", "test")}
        print(f"{category}: {len(ordered)} rows {counts} -> {DATA / BENIGN_FILES[category]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
