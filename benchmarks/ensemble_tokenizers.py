"""What an ensemble across tokenizers costs inside generate(): SmolLM2-135M-Instruct + Gemma-3-270M, per token.

The target (issue 17): the ensemble's per-token time is at most 1.3 x (t_primary + t_member), at
64 and at 512 new tokens (flat in length), where t_primary is SmolLM2 generating alone and
t_member Gemma-3-270M generating alone (its own tokens, from the same text the ensemble's member
reads), measured side by side in interleaved rounds (greedy, ``min_new_tokens = max_new_tokens``,
float32, one torch thread, B=1, a chat prompt). The ensemble is ``LogOddsEnsemble(gemma,
[0.6, 0.4], "mixture", tokenizer=[smollm2_tokenizer, gemma_tokenizer])``: each step runs Gemma on
the tokens the re-encoded text gained (usually one), after rolling back the ones that changed.

CPU-time ratios (medians of per-round ratios) are the verdict; wall clock is printed beside them.
``--adaptive`` also times the same ensemble with adaptive mixture weights (``adaptive=True``: a
posterior over a weight grid updated per row at every step, :mod:`logit_processors.ensemble.adaptive`)
in the same rounds, and reports its per-token time relative to the plain mixture's, side by side
(the two generate different text, so the members' work differs too), and the combination step
alone (both members' log-probs given, B=1, 49,152 tokens): plain mixture against adaptive
(posterior update and per-row mixture), CPU ms per step (``--combination-only`` runs just that).

    python benchmarks/ensemble_tokenizers.py [--rounds 3] [--lengths 64,512] [--adaptive] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_io import write_json  # noqa: E402
from ensemble import ratio, row, time_interleaved  # noqa: E402  (the same timing rules as the same-tokenizer ensemble)
from generate_overhead import chat_inputs, load_smollm2  # noqa: E402

from logit_processors import LogOddsEnsemble  # noqa: E402
from logit_processors.models import load  # noqa: E402

TARGET = 1.3
WEIGHTS = (0.6, 0.4)


def generate(model, inputs, processors, new_tokens: int, pad_token_id: int):
    with torch.inference_mode():
        return model.generate(**inputs, logits_processor=processors, do_sample=False, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, pad_token_id=pad_token_id)


def combination_step(steps: int = 300, rounds: int = 5, vocabulary: int = 49_152) -> dict:
    """CPU ms per step of the combination alone: the plain mixture against the adaptive one (the
    posterior update from the last token, then the per-row mixture), B=1, medians of ``rounds``."""
    from logit_processors import numerics
    from logit_processors.ensemble.adaptive import AdaptiveMixture, AdaptiveRows
    from logit_processors.ensemble.combine import combine_log_probs, row_weighted_mixture

    generator = torch.Generator().manual_seed(0)
    primary, member = torch.randn(1, vocabulary, generator=generator), torch.randn(1, vocabulary, generator=generator)
    member = member.log_softmax(-1)
    rows = AdaptiveRows(AdaptiveMixture.centered_at(list(WEIGHTS)))
    history = [torch.zeros(1, 8, dtype=torch.long)]

    def plain():
        return combine_log_probs([primary, member], list(WEIGHTS), "mixture")

    def adaptive():
        history[0] = torch.cat([history[0], torch.randint(0, vocabulary, (1, 1), generator=generator)], dim=1)
        log_probs = [numerics.log_softmax(primary), numerics.log_softmax(member)]
        return row_weighted_mixture(log_probs, rows.weights_for(history[0], torch.stack(log_probs)))

    times = {"plain": [], "adaptive": []}
    for _ in range(rounds):
        for name, step in (("plain", plain), ("adaptive", adaptive)):
            history[0] = history[0][:, :8]
            rows.reset()
            start = time.process_time()
            for _ in range(steps):
                step()
            times[name].append((time.process_time() - start) / steps * 1e3)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    return {"cpu_ms_per_step": median, "ratio": median["adaptive"] / median["plain"], "steps": steps,
            "rounds": rounds, "vocabulary": vocabulary}


def run(rounds: int, lengths: list[int], log=print, adaptive: bool = False) -> dict:
    primary, tokenizer = load_smollm2()
    member, member_tokenizer = load("gemma3-270m", progress=False)
    inputs = chat_inputs(tokenizer, 1)
    # Gemma alone continues the text its aligned copy reads: the prompt's text without special tokens.
    text = tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
    member_inputs = member_tokenizer([text], return_tensors="pt")
    started = time.perf_counter()
    ensemble = LogOddsEnsemble(member, list(WEIGHTS), "mixture", tokenizer=[tokenizer, member_tokenizer])
    build_s = time.perf_counter() - started
    learning = LogOddsEnsemble(member, list(WEIGHTS), "mixture", tokenizer=[tokenizer, member_tokenizer], adaptive=True)
    adaptive_ratios = []
    rows, ratios, samples = [], [], {}
    for tokens in lengths:
        cases = {
            "primary": lambda n=tokens: generate(primary, inputs, [], n, tokenizer.pad_token_id),
            "member": lambda n=tokens: generate(member, member_inputs, [], n, member_tokenizer.pad_token_id),
            "ensemble": lambda n=tokens: generate(primary, inputs, [ensemble], n, tokenizer.pad_token_id),
        }
        if adaptive:
            cases["adaptive"] = lambda n=tokens: generate(primary, inputs, [learning], n, tokenizer.pad_token_id)
        wall, cpu, outputs = time_interleaved(cases, rounds, f"{tokens} tokens", log)
        rows += [row("tokenizers", "gemma3-270m", 1, tokens, case, wall[case], cpu[case]) for case in cases]
        ratios.append({"name": "ensemble / (primary + member)", "member": "gemma3-270m", "batch": 1,
                       "new_tokens": tokens, **ratio(wall, cpu, "ensemble", ["primary", "member"])})
        if adaptive:
            adaptive_ratios.append({"name": "adaptive / plain mixture", "new_tokens": tokens,
                                    **ratio(wall, cpu, "adaptive", ["ensemble"]),
                                    "final_weights": learning.adaptive_weights[0].tolist()})
        samples[tokens] = tokenizer.decode(outputs["ensemble"][0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        counts = ensemble.counts
        log(f"  member tokens run per generated token: {counts['fed'] / max(1, counts['continue']):.2f} "
            f"(rolled back {counts['rolled_back']}), over every call so far")
    flat = {}
    if len(lengths) >= 2:
        short, long = lengths[0], lengths[-1]
        per_token = {n: [r for r in rows if r["new_tokens"] == n and r["case"] == "ensemble"][0] for n in (short, long)}
        flat = {"name": f"ensemble per-token time, {long} / {short} new tokens",
                "cpu": per_token[long]["cpu_ms_per_token"] / per_token[short]["cpu_ms_per_token"],
                "wall": per_token[long]["ms_per_token"] / per_token[short]["ms_per_token"]}
    target = {"target": f"ensemble per-token time <= {TARGET} x (t_primary + t_member), B=1, at {lengths} new tokens",
              "measured": {r["new_tokens"]: r["paired"] for r in ratios},
              "measured_wall": {r["new_tokens"]: r["wall_paired"] for r in ratios},
              "pass": all(r["paired"] <= TARGET for r in ratios)}
    print(f"\n{'tokens':>6s} {'case':9s} {'cpu ms/token':>12s} {'wall ms/token':>13s}")
    for r in rows:
        print(f"{r['new_tokens']:6d} {r['case']:9s} {r['cpu_ms_per_token']:12.1f} {r['ms_per_token']:13.1f}")
    for r in ratios:
        print(f"ensemble / (primary + member) at {r['new_tokens']} tokens: cpu {r['paired']:.3f} (medians "
              f"{r['median']:.3f}), wall {r['wall_paired']:.3f}")
    if flat:
        print(f"{flat['name']}: cpu {flat['cpu']:.3f}, wall {flat['wall']:.3f}")
    for r in adaptive_ratios:
        print(f"adaptive / plain mixture at {r['new_tokens']} tokens: cpu {r['paired']:.3f} "
              f"(medians {r['median']:.3f}), wall {r['wall_paired']:.3f}; "
              f"final weights {[round(w, 3) for w in r['final_weights']]}")
    print(f"[{'PASS' if target['pass'] else 'FAIL'}] {target['target']}")
    return {"meta": {"rounds": rounds, "lengths": lengths, "threads": torch.get_num_threads(), "weights": list(WEIGHTS),
                     "ensemble_build_s": build_s, "statistics": "median of per-round CPU-time ratios"},
            "rows": rows, "ratios": ratios, "flat": flat, "targets": [target],
            "samples": {str(k): v for k, v in samples.items()}, "adaptive": adaptive_ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", default="64,512")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--adaptive", action="store_true", help="also time adaptive mixture weights, side by side")
    parser.add_argument("--combination-only", action="store_true",
                        help="time only the combination step, plain mixture against adaptive")
    parser.add_argument("--json", default="benchmarks/results/ensemble_tokenizers.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.combination_only:
        step = combination_step()
        print(f"combination step, CPU ms: plain {step['cpu_ms_per_step']['plain']:.3f}, adaptive "
              f"{step['cpu_ms_per_step']['adaptive']:.3f} (ratio {step['ratio']:.3f})")
        print(f"Wrote {write_json(args.json, {'combination_step': step})}")
        return 0
    section = run(args.rounds, [int(x) for x in args.lengths.split(",")], adaptive=args.adaptive)
    if args.adaptive:
        section["combination_step"] = combination_step()
    print(f"Wrote {write_json(args.json, section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
