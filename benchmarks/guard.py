"""What the attack-detection guard adds to a real generation: SmolLM2-135M-Instruct, 64 new tokens.

The target (issue 6, item 9): guarded generation takes at most 1.05x the time of plain
generation, measured side by side in one run. For a fixed benign chat request (B=1, greedy,
float32 on the CPU, ``min_new_tokens = max_new_tokens = 64`` so that EOS cannot end it early):

``plain``
    ``model.generate(**chat_inputs)``: the prefill computes the logits of the last prompt
    position only, then 64 decoding steps;
``guarded``
    :func:`logit_processors.guard.guarded_generate` with the shipped detector and the default
    ``record`` policy: one prefill that also returns the logits of the user's tokens, the
    detector's scoring, ``generate()`` continuing from that cache (the last prompt token, then
    the steps), and the :class:`GapGuard` processor recording each step (its
    ``LogitGapMonitor``);
``guarded, no monitor``
    the same with ``monitor=False`` (the guard's own per-step cost without per-step statistics).

The cases run in interleaved rounds (rotating order) so that drifting machine load hits all
alike. Each call is timed twice: wall clock (``perf_counter``) and the CPU time of the process
(``process_time``; with one torch thread, the work the call did, without the time it spent
waiting for a core that another process held). The target is judged on the *paired* ratio, the
median over rounds of ``guarded / plain`` for the two calls of one round (they ran back to back,
so load drift between rounds cancels), of wall-clock time when the machine was quiet enough
(load average below its core count during the run), else of CPU time (on an oversubscribed
machine a wall-clock ratio measures the neighbours, not the guard). Both paired ratios, and
the wall-clock ratios of medians and of minima, are always reported. The run also checks that
guarded and plain generation produce the same tokens.

    python benchmarks/guard.py [--rounds 7] [--threads 1] [--json PATH]
    python benchmarks/run.py --only guard          # the same, as a section of the one benchmark command
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import torch
from bench_io import write_json  # benchmarks/bench_io.py (this script's folder is on sys.path)

NEW_TOKENS = 64
ROUNDS = 7
THREADS = 1  # one thread: less noise from the other processes of a shared machine
TARGET = 1.05
TARGET_NAME = "guarded generation <= 1.05x plain generation (SmolLM2, 64 new tokens)"
QUESTION = "Explain how a hash table works, with a short example."
CASES = ("plain", "guarded", "guarded, no monitor")


def load():
    from logit_processors.detection import default_detector
    from logit_processors.models import load as load_model

    model, tokenizer = load_model("smollm2", dtype=torch.float32, progress=False)
    model.eval()
    return model, tokenizer, default_detector(model, tokenizer)


def run_section(rounds: int = ROUNDS, threads: int | None = THREADS, new_tokens: int = NEW_TOKENS, loaded=None,
                log=print) -> dict:
    """Time the three cases; returns ``{"meta", "rows", "targets", "checks"}`` and prints a table."""
    from logit_processors.detection.guard import guarded_generate

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        started, load_start = time.perf_counter(), os.getloadavg()
        model, tokenizer, detector = loaded if loaded is not None else load()
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

        def plain():
            with torch.inference_mode():
                return model.generate(**inputs, **settings)[0, inputs["input_ids"].shape[1]:]

        def guarded(monitor: bool):
            return guarded_generate(model, tokenizer, QUESTION, detector=detector, monitor=monitor, **settings).new_tokens

        run = {"plain": plain, "guarded": lambda: guarded(True), "guarded, no monitor": lambda: guarded(False)}
        log(f"guarded generation: SmolLM2-135M-Instruct float32 CPU, {torch.get_num_threads()} thread(s), greedy, "
            f"{new_tokens} new tokens, {rounds} interleaved rounds")
        outputs = {case: fn() for case, fn in run.items()}  # warm-up; also the outputs compared below
        times: dict[str, list[float]] = {case: [] for case in CASES}
        cpu: dict[str, list[float]] = {case: [] for case in CASES}
        gc.collect()
        gc.disable()
        try:
            for r in range(rounds):
                order = CASES[r % len(CASES):] + CASES[: r % len(CASES)]
                for case in order:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run[case]()
                    times[case].append(time.perf_counter() - start)
                    cpu[case].append(time.process_time() - start_cpu)
                log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{c} {times[c][-1]:.2f} s" for c in CASES))
        finally:
            gc.enable()
    finally:
        torch.set_num_threads(previous_threads)

    plain_median, plain_min = statistics.median(times["plain"]), min(times["plain"])
    rows = [{"section": "guard", "case": case, "new_tokens": new_tokens, "rounds": rounds,
             "median_s": statistics.median(times[case]), "min_s": min(times[case]),
             "ratio_paired": statistics.median(c / p for c, p in zip(times[case], times["plain"], strict=True)),
             "ratio": statistics.median(times[case]) / plain_median, "ratio_min": min(times[case]) / plain_min,
             "cpu_median_s": statistics.median(cpu[case]),
             "cpu_ratio_paired": statistics.median(c / p for c, p in zip(cpu[case], cpu["plain"], strict=True)),
             "times_s": times[case], "cpu_s": cpu[case]} for case in CASES]
    by = {r["case"]: r for r in rows}
    load_end = os.getloadavg()
    cores = os.cpu_count() or 1
    quiet = max(load_start[0], load_end[0]) < cores
    clock = "wall-clock" if quiet else "CPU"
    measured = by["guarded"]["ratio_paired" if quiet else "cpu_ratio_paired"]
    target = {"section": "guard", "target": TARGET_NAME,
              "rule": f"median over rounds of guarded / plain {clock} time <= {TARGET}"
                      + ("" if quiet else f" (load average {max(load_start[0], load_end[0]):.1f} on {cores} cores: "
                                          "wall clock measures the neighbours)"),
              "clock": clock, "measured": measured, "measured_wall": by["guarded"]["ratio_paired"],
              "measured_cpu": by["guarded"]["cpu_ratio_paired"], "measured_medians": by["guarded"]["ratio"],
              "measured_min": by["guarded"]["ratio_min"], "pass": measured <= TARGET}
    checks = [{"section": "guard", "case": case, "same_tokens_as_plain": bool(torch.equal(outputs[case], outputs["plain"])),
               "new_tokens": int(outputs[case].numel())} for case in CASES[1:]]
    print_table(rows)
    for check in checks:
        if not check["same_tokens_as_plain"] or check["new_tokens"] != new_tokens:
            print(f"CHECK FAILED: {check}")
    meta = {"threads": threads or previous_threads, "rounds": rounds, "new_tokens": new_tokens, "question": QUESTION,
            "elapsed_s": time.perf_counter() - started, "load_average_at_start": load_start,
            "load_average_at_end": load_end, "cores": cores}
    return {"meta": meta, "rows": rows, "targets": [target], "checks": checks}


def print_table(rows: list[dict]) -> None:
    header = (f"{'case':22s} {'median s':>9s} {'min s':>8s} {'x plain':>8s} {'(medians)':>10s} {'(minima)':>9s}"
              f" {'CPU s':>7s} {'CPU x plain':>12s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:22s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['ratio_paired']:8.3f} "
              f"{r['ratio']:10.3f} {r['ratio_min']:9.3f} {r['cpu_median_s']:7.3f} {r['cpu_ratio_paired']:12.3f}")


def print_target(t: dict) -> None:
    verdict = "PASS" if t["pass"] else "FAIL"
    print(f"  [{verdict}] {t['target']}  ({t['rule']}; measured: {t['measured']:.3f}x; wall clock: paired "
          f"{t['measured_wall']:.3f}x, medians {t['measured_medians']:.3f}x, minima {t['measured_min']:.3f}x; "
          f"CPU time paired {t['measured_cpu']:.3f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved rounds ({ROUNDS})")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads ({THREADS}; 0: torch's default)")
    parser.add_argument("--json", default="benchmarks/results/guard.json", help="where to write the rows")
    args = parser.parse_args(argv)
    section = run_section(rounds=args.rounds, threads=args.threads)
    print("\nTarget (from the issue):")
    for t in section["targets"]:
        print_target(t)
    print(f"Wrote {write_json(args.json, section)} ({section['meta']['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
