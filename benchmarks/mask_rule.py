"""ColumnMask's method rule, checked on this machine: the three exact methods timed across the
fraction of a row they remove, against the method the rule picks.

    python benchmarks/mask_rule.py [--quick]         # also part of: python benchmarks/run.py

The library picks a method from sizes alone (``ColumnMask.method_for_fraction``: a scattered
method only when it touches at most 1/256 of a row), never from timings taken on one CPU. This
measures, per vocabulary size and fraction, each method's time and the rule's *regret*: its
method's time over the fastest one's (1.0 = the rule picked the fastest). Cost figures measured
here belong in this file's output, not in the library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Case, time_interleaved  # noqa: E402  (benchmarks/timing.py)

from logit_processors.processors.column_mask import ColumnMask  # noqa: E402

FRACTIONS = (1 / 4096, 1 / 1024, 1 / 256, 1 / 128, 1 / 64, 1 / 16, 1 / 2, 1 - 1 / 64, 1 - 1 / 256, 1 - 1 / 1024)
VOCABS = (49152, 262144)
BATCH = 8
#: What the rule is held to (the benchmark reports it; tests never time anything).
TARGET_REGRET = 1.3


def cases(vocab: int, fraction: float, seed: int = 0):
    """``{method: Case}`` for a mask removing ``fraction`` of ``vocab`` columns at random."""
    g = torch.Generator().manual_seed(seed)
    removed = torch.zeros(vocab, dtype=torch.bool)
    removed[torch.randperm(vocab, generator=g)[: max(1, round(fraction * vocab))]] = True
    scores = torch.randn(BATCH, vocab, generator=g)
    masks = {method: ColumnMask(removed, method=method) for method in ColumnMask.METHODS}
    expected = masks["cap"].apply(scores)[0]
    assert all(torch.equal(m.apply(scores)[0], expected) for m in masks.values())
    return removed, {
        method: Case(f"{method}", (lambda m=mask: m.apply(scores)), f"V={vocab} f={fraction:.5f}", "ours", BATCH, vocab)
        for method, mask in masks.items()
    }


def run_section(rounds: int, block: float) -> dict:
    rows = []
    print(f"ColumnMask rule (B={BATCH}): microseconds per call of each method; regret = rule's time / fastest")
    print(f"{'V':>7s} {'removed':>9s} {'fill':>9s} {'keep':>9s} {'cap':>9s}  {'fastest':>7s} {'rule':>5s} {'regret':>7s}")
    for vocab in VOCABS:
        for fraction in FRACTIONS:
            removed, by_method = cases(vocab, fraction)
            time_interleaved(list(by_method.values()), rounds, block)
            times = {m: c.median_us for m, c in by_method.items()}
            fastest = min(times, key=times.get)
            rule = ColumnMask(removed).method
            regret = times[rule] / times[fastest]
            rows.append({"vocab": vocab, "batch": BATCH, "removed_fraction": fraction, "us": times,
                         "fastest": fastest, "rule": rule, "regret": regret})
            print(f"{vocab:7d} {fraction:9.5f} {times['fill']:9.1f} {times['keep']:9.1f} {times['cap']:9.1f}  "
                  f"{fastest:>7s} {rule:>5s} {regret:7.2f}")
    worst = max(r["regret"] for r in rows)
    target = {"target": f"ColumnMask's size rule within {TARGET_REGRET}x of the fastest method at every fraction",
              "rule": "max over fractions and vocabularies of t(rule's method) / t(fastest method)",
              "measured": {"worst regret": worst}, "measured_min": {"worst regret": worst}, "floor": {},
              "pass": worst <= TARGET_REGRET}
    print(f"  [{'PASS' if target['pass'] else 'FAIL'}] {target['target']}: worst regret {worst:.2f}")
    return {"rows": rows, "targets": [target]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    run_section(*((7, 0.01) if args.quick else (21, 0.025)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
