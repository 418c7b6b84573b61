"""The library's version: one place, read by ``pyproject.toml`` and by saved artifacts."""

__version__ = "0.1.0"
