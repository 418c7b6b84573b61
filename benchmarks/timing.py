"""The interleaved timer of the micro-benchmarks: every case timed in turn, round after round.

Times are per call, the median over rounds: each round times a block of calls of every case in
turn (from a rotating start), so slow drift in machine load (other processes, turbo, thermal)
hits all cases alike instead of whichever case happened to run then.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    fn: Callable[[], object]
    group: str  # which processor this case belongs to (for the table)
    role: str  # "ours", "hf", "clone" or "floor" (the bare PyTorch kernel for the same result)
    batch: int
    vocab: int
    note: str = ""
    calls: int = 1
    times: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.times) * 1e6

    @property
    def min_us(self) -> float:
        return min(self.times) * 1e6


def time_interleaved(cases: list[Case], rounds: int, block_seconds: float) -> None:
    """Per-call times of every case, over ``rounds`` interleaved rounds.

    Each case first runs three times (warm-up: lazy initialisation, caches, TopP's learned
    window); the fastest of those sets a block size of ``calls`` so that one block takes about
    ``block_seconds``. Each round then times one block of every case, starting from a rotating
    case.
    """
    for case in cases:
        single = math.inf
        for _ in range(3):
            start = time.perf_counter()
            case.fn()
            single = min(single, time.perf_counter() - start)
        case.calls = max(1, min(10_000, round(block_seconds / max(single, 1e-7))))
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = cases[r % len(cases) :] + cases[: r % len(cases)]
            for case in order:
                fn, calls = case.fn, case.calls
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                case.times.append((time.perf_counter() - start) / calls)
    finally:
        gc.enable()
