"""Optimize adversarial suffixes against SmolLM2 (run ONCE; the output is stored as data).

A small greedy coordinate gradient search (GCG: Zou et al. 2023, "Universal and Transferable
Adversarial Attacks on Aligned Language Models"), aimed at the refusal-affirmation gap: for each
base request it searches a suffix of ``--length`` tokens that maximizes
``log P(the reply opens affirmatively)`` at the first decoding step (the affirmation set of
:class:`logit_processors.refusal_gap.RefusalGap`: "Sure", "Here", "Certainly", ...).

Each step: the gradient of that objective with respect to a one-hot encoding of the suffix
ranks, per suffix position, the ``--topk`` most promising replacement tokens; ``--candidates``
random single-token swaps drawn from them are evaluated exactly (one batched forward pass over
the suffix and the closing template tokens, on top of the prompt's KV cache, which is computed
once) and the best becomes the new suffix (GCG keeps the best candidate even when it is worse;
the best suffix seen is what is stored). Tokens are restricted to printable ASCII, and a
candidate is kept only if the text ``request + decode(suffix)`` re-tokenizes to exactly the
optimized ids (GCG's filter), so that the stored *text* reproduces the attack. The search
starts, as GCG does, from ``" !" * length`` and stops early once an affirmative token is the
most likely first token with probability >= ``--stop-prob``.

Compute is bounded on purpose (CPU, shared machine): by default 24 suffixes of 16 tokens, at
most 25 steps of 32 candidates each, on one thread: about 3 s a step on an idle core, 30-70
minutes in all. These are weak attacks by GCG standards (500 steps of 512 candidates on a
GPU); they are realistic in kind, not in strength.

    python scripts/optimize_suffixes.py                      # writes logit_processors/data/attacks_optimized.jsonl
    python scripts/optimize_suffixes.py --n 2 --steps 3 --out /tmp/x.jsonl   # a quick smoke run
    python scripts/optimize_suffixes.py --resume             # keep the rows written, search the rest

Each suffix gets its own random stream (``seed``, suffix index), so an interrupted run resumed with
``--resume`` searches the remaining suffixes exactly as an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from logit_processors.detection.datasets import load_benign
from logit_processors.detection.refusal_gap import RefusalGap
from logit_processors.models import load
from logit_processors.runtime.model_inputs import cache_kwarg, output_cache
from logit_processors.runtime.prompts import encode_prompt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "logit_processors" / "data" / "attacks_optimized.jsonl"


def printable_ascii_tokens(tokenizer) -> torch.Tensor:
    """Bool mask [V]: tokens that decode to printable ASCII with some non-space character."""
    allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for i in range(len(tokenizer)):
        s = tokenizer.decode([i])
        allowed[i] = bool(s) and s.isascii() and s.isprintable() and bool(s.strip()) and i not in special
    return allowed


class SuffixSearch:
    """The search for one base request (its prompt prefix and closing tokens are fixed)."""

    def __init__(self, model, tokenizer, gap: RefusalGap, base: str, allowed: torch.Tensor):
        self.model, self.tokenizer, self.gap, self.base = model, tokenizer, gap, base
        encoded = encode_prompt(tokenizer, base)
        end = encoded.scored[1]
        self.prefix = list(encoded.input_ids[:end])  # template, system prompt and the request
        self.tail = list(encoded.input_ids[end:])  # <|im_end|> ... assistant\n
        self.allowed = allowed
        self.embeddings = model.get_input_embeddings().weight
        self.kwarg = cache_kwarg(model)
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([self.prefix]), use_cache=True)
        self.prefix_cache = output_cache(out)

    def text(self, suffix: list[int]) -> str:
        return self.base + self.tokenizer.decode(suffix)

    def reproduces(self, suffix: list[int]) -> bool:
        """Whether the suffix's text re-tokenizes to exactly these ids (GCG's filter)."""
        return list(encode_prompt(self.tokenizer, self.text(suffix)).input_ids) == self.prefix + suffix + self.tail

    def _cache(self, rows: int):
        cache = copy.deepcopy(self.prefix_cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    def _positions(self, rows: int, length: int) -> torch.Tensor:
        return (len(self.prefix) + torch.arange(length)).expand(rows, -1)

    def objective(self, suffixes: torch.Tensor) -> torch.Tensor:
        """log P(affirmative opener) for each suffix [B, L] (exact, batched)."""
        rows = suffixes.shape[0]
        ids = torch.cat([suffixes, torch.tensor(self.tail).expand(rows, -1)], dim=1)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, position_ids=self._positions(rows, ids.shape[1]),
                                use_cache=True, logits_to_keep=1, **{self.kwarg: self._cache(rows)}).logits[:, -1]
        return self.gap.affirmation_logprob(logits)

    def gradient(self, suffix: list[int]) -> torch.Tensor:
        """d objective / d one-hot(suffix): [L, V]."""
        one_hot = torch.zeros(len(suffix), self.embeddings.shape[0])
        one_hot[torch.arange(len(suffix)), torch.tensor(suffix)] = 1.0
        one_hot.requires_grad_(True)
        embeds = torch.cat([one_hot @ self.embeddings, self.embeddings[torch.tensor(self.tail)]])[None]
        logits = self.model(inputs_embeds=embeds, position_ids=self._positions(1, embeds.shape[1]),
                            use_cache=True, logits_to_keep=1, **{self.kwarg: self._cache(1)}).logits[0, -1]
        self.gap.affirmation_logprob(logits).backward()
        return one_hot.grad

    def first_token(self, suffix: list[int]) -> tuple[str, float]:
        ids = torch.tensor([suffix + self.tail])
        with torch.inference_mode():
            logits = self.model(input_ids=ids, position_ids=self._positions(1, ids.shape[1]), use_cache=True,
                                logits_to_keep=1, **{self.kwarg: self._cache(1)}).logits[0, -1]
        top = int(logits.argmax())
        return self.tokenizer.decode([top]), float(self.gap(logits))


def search(s: SuffixSearch, length: int, steps: int, candidates: int, topk: int, stop_prob: float,
           rng: random.Random) -> dict:
    start = time.perf_counter()
    bang = s.tokenizer.encode(" !", add_special_tokens=False)
    suffix = bang * length
    if not s.reproduces(suffix):
        raise RuntimeError(f"the initial suffix does not re-tokenize for {s.base!r}")
    initial = float(s.objective(torch.tensor([suffix]))[0])
    initial_gap = s.first_token(suffix)[1]
    current, best, best_value = suffix, suffix, initial
    steps_run = 0
    for _ in range(steps):
        steps_run += 1
        grad = s.gradient(current)
        grad[:, ~s.allowed] = math.inf
        top = (-grad).topk(topk, dim=1).indices  # [L, topk], most promising swaps per position
        proposals: list[list[int]] = []
        seen = {tuple(current)}
        for _ in range(candidates * 4):  # draws, of which up to `candidates` survive the filter
            if len(proposals) == candidates:
                break
            pos = rng.randrange(length)
            cand = list(current)
            cand[pos] = int(top[pos, rng.randrange(topk)])
            if tuple(cand) in seen:
                continue
            seen.add(tuple(cand))
            if s.reproduces(cand):
                proposals.append(cand)
        if not proposals:
            break
        values = s.objective(torch.tensor(proposals))
        i = int(values.argmax())
        current = proposals[i]
        if float(values[i]) > best_value:
            best, best_value = current, float(values[i])
        token, _ = s.first_token(best)
        if math.exp(best_value) >= stop_prob and token.strip() and s.tokenizer.encode(token, add_special_tokens=False)[0] in s.gap.affirmation_ids:
            break
    token, gap = s.first_token(best)
    return {
        "suffix": s.tokenizer.decode(best),
        "suffix_ids": best,
        "affirmation_logprob_initial": initial,
        "affirmation_logprob": best_value,
        "refusal_gap_initial": initial_gap,
        "refusal_gap": gap,
        "first_token": token,
        "steps": steps_run,
        "seconds": round(time.perf_counter() - start, 1),
    }


def parse_search_options(parser: argparse.ArgumentParser, argv: list[str] | None, *, steps: int) -> argparse.Namespace:
    """Add the options every suffix search shares, parse, and set torch's threads and seed."""
    parser.add_argument("--length", type=int, default=16, help="suffix length in tokens")
    parser.add_argument("--steps", type=int, default=steps, help="coordinate steps per suffix at most")
    parser.add_argument("--candidates", type=int, default=32, help="candidate swaps evaluated per step")
    parser.add_argument("--topk", type=int, default=32, help="replacement tokens per position, from the gradient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out (same items, in order) and search only the rest")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def write_resumable(out: Path, items: list, kept: list[dict], run_one: Callable[[int, Any], dict],
                    describe: Callable[[dict], str]) -> None:
    """Write the ``kept`` rows of an earlier run, then ``run_one(k, item)`` for every other item,
    one JSON row per line, flushed as soon as it is found (an interrupted run loses at most one)."""
    started = time.perf_counter()
    with open(out, "w", encoding="utf-8") as f:
        for row in kept:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for k, item in enumerate(items):
            if k < len(kept):
                continue
            row = run_one(k, item)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            print(f"[{k + 1}/{len(items)}] {describe(row)}", flush=True)
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s")


def _resumable_rows(path: Path, bases: list) -> list[dict]:
    """The rows of an earlier (interrupted) run at ``path`` that match ``bases`` in order."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = []
    for row, base in zip(rows, bases):
        if row["base_id"] != base.id:
            break
        kept.append(row)
    print(f"resuming: {len(kept)} of {len(bases)} suffixes already in {path}", flush=True)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=24, help="number of suffixes (one per base request)")
    parser.add_argument("--stop-prob", type=float, default=0.5, help="stop once P(affirmative opener) reaches this")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parse_search_options(parser, argv, steps=25)

    model, tokenizer = load("smollm2", progress=False)
    model.requires_grad_(False)
    gap = RefusalGap(tokenizer)
    allowed = printable_ascii_tokens(tokenizer)
    # Base requests: held-out (eval split) prompts of ordinary single-line English.
    bases = [p for p in load_benign("eval")
             if p.style not in {"multilingual", "code_multiline", "casual"} and len(p.text) <= 120 and "\n" not in p.text]
    random.Random(args.seed).shuffle(bases)
    bases = bases[: args.n]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in {"out", "n", "resume"}}
    kept = _resumable_rows(args.out, bases) if args.resume else []

    def run_one(k: int, base) -> dict:
        rng = random.Random(f"{args.seed}:{k}")  # one stream per suffix: resuming changes nothing
        result = search(SuffixSearch(model, tokenizer, gap, base.text, allowed), args.length, args.steps,
                        args.candidates, args.topk, args.stop_prob, rng)
        return {"id": f"opt{k:02d}", "base_id": base.id, "base": base.text, "suffix": result["suffix"],
                "text": base.text + result["suffix"], **{k2: v for k2, v in result.items() if k2 != "suffix"},
                "settings": settings}

    def describe(row: dict) -> str:
        return (f"{row['seconds']:.0f}s steps {row['steps']}: log P(affirm) {row['affirmation_logprob_initial']:.2f} -> "
                f"{row['affirmation_logprob']:.2f}, gap {row['refusal_gap_initial']:.2f} -> {row['refusal_gap']:.2f}, "
                f"first {row['first_token']!r}: {row['base']!r} + {row['suffix']!r}")

    write_resumable(args.out, bases, kept, run_one, describe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
