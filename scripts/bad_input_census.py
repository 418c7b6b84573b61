"""Count how the public processors handle bad and unusual input: correct, obscure error, silent bad output.

    python scripts/bad_input_census.py                 # this checkout
    python scripts/bad_input_census.py --repo DIR      # another checkout's package (e.g. an older commit)

The cases are tests/bad_inputs.py's catalogue (the same one tests/test_bad_input.py asserts),
without the arguments of the input policy itself (``on_nan=``), which older checkouts lack.
Prints the counts per outcome and per kind of input, then every case that did not come out
correct. Needs the tiny GPT-2 (built offline on first use).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="a checkout whose logit_processors to census")
    parser.add_argument("--quiet", action="store_true", help="counts only")
    args = parser.parse_args(argv)
    if args.repo is not None:
        sys.path.insert(0, str(args.repo.resolve()))
    sys.path.insert(1 if args.repo is not None else 0, str(HERE / "tests"))
    import bad_inputs  # tests/bad_inputs.py

    import logit_processors

    env = bad_inputs.Environment()
    cases = bad_inputs.all_cases(env, policy_arguments=False)
    outcomes = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    wrong = []
    for case in cases:
        outcome, detail = bad_inputs.judge(case)
        outcomes[outcome] += 1
        by_kind[case.kind][outcome] += 1
        if outcome != "correct":
            wrong.append((outcome, case, detail))
    print(f"logit_processors from {Path(logit_processors.__file__).parent}: {len(cases)} cases")
    print("  " + ", ".join(f"{name}: {outcomes[name]}" for name in bad_inputs.OUTCOMES))
    for kind, counts in sorted(by_kind.items()):
        print(f"  {kind:12s} " + ", ".join(f"{name} {counts[name]}" for name in bad_inputs.OUTCOMES))
    if not args.quiet:
        for outcome, case, detail in sorted(wrong, key=lambda w: (w[0], w[1].processor)):
            print(f"{outcome:18s} {case.processor:20s} {case.kind:12s} {case.label}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
