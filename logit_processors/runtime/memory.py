"""Give freed heap memory back to the operating system between large batches.

A forward pass over a batch of long prompts allocates and frees hundreds of megabytes of
temporaries (logits, hidden states, attention). glibc's allocator keeps freed blocks below its
(dynamically raised, up to 32 MB) mmap threshold in its heap, and with blocks of ever-changing
sizes that heap fragments: measured here, scoring 128 pasted documents with SmolLM2 grew the
process from 0.9 GB to 3.1 GB while the live data stayed under 1 GB, and ``detect-eval`` over its
1,626 prompts reached 24 GB and was killed on a 24 GB machine. ``malloc_trim(0)`` after each batch
returns the free pages (RSS stayed at 0.92 GB in the same run). Elsewhere (macOS, musl, Windows)
it does nothing.

Example:
    >>> release_freed_memory()  # safe to call anywhere, any time
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl has no malloc_trim)
        return None


def release_freed_memory() -> None:
    """Return the allocator's free pages to the operating system (glibc; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


__all__ = ["release_freed_memory"]
