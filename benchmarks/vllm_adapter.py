"""Tokens per second of vLLM with our adapter against vLLM's own sampling parameters for the same
effect, at 1 and 16 concurrent requests (the vLLM tier's environment):

    .venv-vllm/bin/python benchmarks/vllm_adapter.py [--rounds 3] [--tokens 64]

Cases, each a batch of ``concurrency`` requests of exactly ``--tokens`` new tokens (``ignore_eos``):

* ``plain``: no processors (the floor);
* ``builtin temperature+top-p`` (``temperature=0.7, top_p=0.9``) vs ``ours temperature+top-p``
  (a spec ``temperature 0.7, top_p 0.9``, vLLM's own left at 1.0);
* ``builtin bad_words`` (``bad_words=[...]``) vs ``ours phrase_ban`` (the same phrases in a spec).

All cases run in every round, in a rotated order (interleaved), one engine; the figure is the
median over rounds of each case's time relative to its builtin twin, and the adapter's share of
decode time, ``(t_ours - t_builtin) / t_ours`` (target at 16 requests: at most 10%). Results as
JSON in benchmarks/results/vllm_adapter.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PHRASES = ["Paris", "London", "the capital", "however", "In conclusion", "I think", "delve", "tapestry"]
PROMPT = "Write a short essay about the history of European capitals."


def cases(sampling_params) -> dict[str, object]:
    ours_top_p = {"processors": [{"type": "temperature", "temperature": 0.7}, {"type": "top_p", "p": 0.9}]}
    ours_ban = {"processors": [{"type": "phrase_ban", "phrases": PHRASES}]}
    return {
        "plain": lambda seed, n: sampling_params(seed=seed, max_tokens=n, ignore_eos=True),
        "builtin temperature+top-p": lambda seed, n: sampling_params(seed=seed, max_tokens=n, ignore_eos=True,
                                                                    temperature=0.7, top_p=0.9),
        "ours temperature+top-p": lambda seed, n: sampling_params(seed=seed, max_tokens=n, ignore_eos=True,
                                                                 extra_args={"logit_processors": ours_top_p}),
        "builtin bad_words": lambda seed, n: sampling_params(seed=seed, max_tokens=n, ignore_eos=True,
                                                             bad_words=PHRASES),
        "ours phrase_ban": lambda seed, n: sampling_params(seed=seed, max_tokens=n, ignore_eos=True,
                                                          extra_args={"logit_processors": ours_ban}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    from logit_processors.models import ensure_converted

    llm = LLM(model=str(ensure_converted("smollm2", progress=False)), dtype="float32", max_model_len=512,
              max_num_seqs=max(args.concurrency), seed=0, enforce_eager=True)
    builders = cases(SamplingParams)
    llm.generate([PROMPT], builders["plain"](0, 8), use_tqdm=False)  # warm-up
    times: dict[tuple[int, str], list[float]] = {}
    names = list(builders)
    for r in range(args.rounds):
        for concurrency in args.concurrency:
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotated: no case always first
                params = [builders[name](1000 * r + i, args.tokens) for i in range(concurrency)]
                start = time.perf_counter()
                llm.generate([PROMPT] * concurrency, params, use_tqdm=False)
                times.setdefault((concurrency, name), []).append(time.perf_counter() - start)
    rows = []
    for concurrency in args.concurrency:
        for ours, builtin in (("ours temperature+top-p", "builtin temperature+top-p"), ("ours phrase_ban", "builtin bad_words"),
                              ("ours temperature+top-p", "plain"), ("ours phrase_ban", "plain")):
            a, b = times[(concurrency, ours)], times[(concurrency, builtin)]
            ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
            rows.append({"concurrency": concurrency, "ours": ours, "against": builtin,
                         "tokens_per_s_ours": concurrency * args.tokens / statistics.median(a),
                         "tokens_per_s_against": concurrency * args.tokens / statistics.median(b),
                         "time_ratio": ratio, "share_of_decode": 1 - 1 / ratio})
    for row in rows:
        print(f"{row['concurrency']:>3} requests  {row['ours']:<24} {row['tokens_per_s_ours']:7.1f} tok/s   "
              f"{row['against']:<26} {row['tokens_per_s_against']:7.1f} tok/s   time ratio {row['time_ratio']:.3f}  "
              f"share of decode {100 * row['share_of_decode']:+.1f}%")
    out = Path(__file__).parent / "results" / "vllm_adapter.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "tokens": args.tokens, "rows": rows,
                               "times": {f"{c} {n}": t for (c, n), t in times.items()}}, indent=1))


if __name__ == "__main__":
    main()
