"""Writing a benchmark's results: one JSON document, its folder made if needed (shared by every section)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, document: dict) -> Path:
    """Write ``document`` as indented JSON to ``path`` (parents created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    return out
