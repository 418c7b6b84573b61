"""Temperature calibration of SmolLM2-135M-Instruct: fit cost, held-out figures, vector scaling.

    python benchmarks/calibration.py [--quick] [--rounds 3] [--threads 1] [--json PATH]
    python benchmarks/calibration.py --memory-model gemma3-270m    # + peak memory, 262,144-token vocabulary

The corpus is CPython's pydoc help topics (``logit_processors.models.tiny_gpt2.corpus``), the first
``--chars`` characters of each topic longer than 400 characters: even-numbered topics are the
calibration text, odd-numbered ones the held-out text. Three sections, one run:

1. **Fit cost** (issue 5, item 8): ``CalibratedTemperature.fit`` on the calibration text against
   one plain forward pass over the same text (the same windows, batches and order:
   ``model(input_ids, attention_mask).logits``), in interleaved rounds (forward, fit, fit,
   forward, ...). Target: median fit / median forward <= 1.5 (also given from minima and as the
   median of per-round ratios).
2. **Held-out figures**: the fitted temperature, and NLL, ECE-15 (equal-width and equal-mass),
   top-label Brier and accuracy on the held-out text at T = 1 and at the fitted T.
3. **Vector scaling** (issue 5, item 3): a per-token bias ``b`` on top of the temperature,
   ``softmax(z / T + b)``, fitted with an L2 penalty ``lam * ||b||^2`` on 80% of the calibration
   text (L-BFGS on in-memory logits), ``lam`` chosen on the other 20%, then judged by held-out
   NLL against temperature scaling alone (fitted on the same 80%), and on text of another kind
   (IDLE's change log, idlelib/NEWS.txt). Kept only if it helps.

``--memory-model gemma3-270m`` adds a fit of that model (262,144-token vocabulary) on a slice of
the calibration text, reporting the process's peak resident memory before and after, and the
size full logits would need.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_io import write_json  # benchmarks/bench_io.py (this script's folder is on sys.path)

from logit_processors.calibration import CalibratedTemperature, window_length
from logit_processors.calibration.fit import optimal_temperature
from logit_processors.calibration.metrics import Predictions
from logit_processors.models.tiny_gpt2 import corpus
from logit_processors.runtime.model_inputs import left_padded_inputs
from logit_processors.runtime.streamed_logits import TeacherForcedLogits, text_windows

FIT_TARGET = 1.5
FIT_NAME = "CalibratedTemperature.fit time <= 1.5 x one forward pass over the calibration text (SmolLM2)"
BATCH, MAX_LENGTH = 8, 512
LAMBDAS = (1e-2, 1e-3, 1e-4, 1e-5)


def halves(chars: int) -> tuple[list[str], list[str]]:
    documents = [d[:chars] for d in corpus() if len(d) > 400]
    return documents[0::2], documents[1::2]


def other_domain_text(chars: int) -> list[str]:
    """Text of another kind, for a cross-domain check: IDLE's change log (idlelib/NEWS.txt), if this
    Python ships it."""
    import idlelib

    path = Path(idlelib.__file__).parent / "NEWS.txt"
    return [path.read_text(encoding="utf-8")[:chars]] if path.is_file() else []


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss` (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``), so that the next peak
    is the fit's own, not the model conversion's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# 1. Fit cost


def plain_forward(model, windows: list[list[int]]) -> int:
    """One forward pass over ``windows`` as the fit batches them (longest first); full logits."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    device = next(model.parameters()).device
    positions = 0
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            batch = [windows[i] for i in order[start : start + BATCH]]
            logits = model(**left_padded_inputs(batch, device, True)).logits
            positions += sum(len(w) - 1 for w in batch)
            del logits
    return positions


def fit_cost(model, tokenizer, texts: list[str], rounds: int) -> dict:
    windows = text_windows(tokenizer, texts, max_length=window_length(model, MAX_LENGTH))
    CalibratedTemperature.fit(model, tokenizer, texts[:1], progress=False)  # warm-up (and the head-split check)
    plain_forward(model, windows[:BATCH])
    times: dict[str, list[float]] = {"forward": [], "fit": []}
    temperature = None
    for r in range(rounds):
        for case in (("forward", "fit") if r % 2 == 0 else ("fit", "forward")):
            gc.collect()
            start = time.perf_counter()
            if case == "forward":
                plain_forward(model, windows)
            else:
                temperature = CalibratedTemperature.fit(model, tokenizer, texts, progress=False).temperature
            times[case].append(time.perf_counter() - start)
            print(f"  round {r + 1}/{rounds} {case:>7}: {times[case][-1]:7.2f} s", flush=True)
    per_round = [f / p for f, p in zip(times["fit"], times["forward"], strict=True)]
    ratios = {
        "medians": statistics.median(times["fit"]) / statistics.median(times["forward"]),
        "minima": min(times["fit"]) / min(times["forward"]),
        "per_round_median": statistics.median(per_round),
    }
    return {"positions": sum(len(w) - 1 for w in windows), "windows": len(windows), "times_s": times,
            "ratios": ratios, "temperature": temperature,
            "target": {"name": FIT_NAME, "limit": FIT_TARGET, "value": ratios["medians"],
                       "pass": ratios["medians"] <= FIT_TARGET}}


# --------------------------------------------------------------------------------------------
# 2-3. Held-out figures and vector scaling, on in-memory logits


def teacher_forced(model, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    windows = text_windows(tokenizer, texts, max_length=window_length(model, MAX_LENGTH))
    parts = list(TeacherForcedLogits(model, windows, batch_size=BATCH))
    return torch.cat([z for z, _ in parts]), torch.cat([y for _, y in parts])


def nll_and_grad(logits, targets, beta, bias, rows: int = 1024):
    """Mean NLL of ``softmax(beta * z + bias)`` and its gradients in ``beta`` and ``bias`` (exact, chunked)."""
    total, d_beta = 0.0, 0.0
    d_bias = torch.zeros_like(bias, dtype=torch.float64)
    for i in range(0, logits.shape[0], rows):
        z, y = logits[i : i + rows], targets[i : i + rows]
        s = beta * z + bias
        log_p = torch.log_softmax(s, -1)
        p = log_p.exp()
        total += float(-log_p.gather(1, y[:, None]).sum())
        d_beta += float((p * z).sum() - z.gather(1, y[:, None]).sum())
        d_bias += p.sum(0).double()
        d_bias.index_add_(0, y, torch.full(y.shape, -1.0, dtype=torch.float64))
    n = logits.shape[0]
    return total / n, d_beta / n, (d_bias / n).float()


def fit_vector_scaling(logits, targets, lam: float, beta0: float, iterations: int) -> tuple[float, torch.Tensor]:
    """``(beta, bias)`` minimizing mean NLL + ``lam * ||bias||^2``, by L-BFGS from ``(beta0, 0)``."""
    beta = torch.tensor([beta0], dtype=torch.float32, requires_grad=True)
    bias = torch.zeros(logits.shape[1], dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([beta, bias], lr=1.0, max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        loss, g_beta, g_bias = nll_and_grad(logits, targets, float(beta.detach()), bias.detach())
        beta.grad = torch.tensor([g_beta], dtype=torch.float32)
        bias.grad = g_bias + 2 * lam * bias.detach()
        return torch.tensor(loss + lam * float((bias.detach() ** 2).sum()))

    optimizer.step(closure)
    return float(beta.detach()), bias.detach()


def heldout_nll(logits, targets, beta: float, bias: torch.Tensor | None = None) -> float:
    bias = torch.zeros(logits.shape[1]) if bias is None else bias
    return nll_and_grad(logits, targets, beta, bias)[0]


def figures_and_vector_scaling(model, tokenizer, fit_texts, heldout_texts, other_texts, iterations: int) -> dict:
    started = time.perf_counter()
    fit_z, fit_y = teacher_forced(model, tokenizer, fit_texts)
    held_z, held_y = teacher_forced(model, tokenizer, heldout_texts)
    print(f"  logits in memory: {fit_z.shape[0]:,} calibration and {held_z.shape[0]:,} held-out positions "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    streamed = CalibratedTemperature.fit(model, tokenizer, fit_texts, progress=False)
    exact = optimal_temperature(fit_z, fit_y)
    before = Predictions.from_logits(held_z, held_y).summary()
    after = Predictions.from_logits(held_z, held_y, streamed.temperature).summary()
    figures = {"temperature": streamed.temperature, "temperature_in_memory_newton": exact,
               "fit_positions": int(fit_y.shape[0]), "fit_nll_uncalibrated": streamed.fit_stats["nll_uncalibrated"],
               "fit_nll": streamed.fit_stats["nll"], "heldout_uncalibrated": before, "heldout_calibrated": after}

    # Vector scaling: train on 80% of the calibration positions, choose lam on the other 20%.
    cut = int(0.8 * fit_y.shape[0])
    train = (fit_z[:cut], fit_y[:cut])
    val = (fit_z[cut:], fit_y[cut:])
    beta_t = 1.0 / optimal_temperature(*train)
    rows = [{"method": "T = 1", "lam": None, "val_nll": heldout_nll(*val, 1.0), "heldout_nll": heldout_nll(held_z, held_y, 1.0)},
            {"method": "temperature", "lam": None, "temperature": 1 / beta_t, "val_nll": heldout_nll(*val, beta_t),
             "heldout_nll": heldout_nll(held_z, held_y, beta_t)}]
    for lam in LAMBDAS:
        start = time.perf_counter()
        beta, bias = fit_vector_scaling(*train, lam, beta_t, iterations)
        rows.append({"method": "temperature + bias", "lam": lam, "temperature": 1 / beta,
                     "bias_norm": float(bias.norm()), "val_nll": heldout_nll(*val, beta, bias),
                     "heldout_nll": heldout_nll(held_z, held_y, beta, bias), "fit_s": time.perf_counter() - start,
                     "_params": (beta, bias)})
        print(f"  vector scaling lam={lam:g}: T={1 / beta:.4f} |b|={float(bias.norm()):.3f} "
              f"val NLL {rows[-1]['val_nll']:.5f} held-out NLL {rows[-1]['heldout_nll']:.5f} "
              f"({rows[-1]['fit_s']:.0f} s)", flush=True)
    other = teacher_forced(model, tokenizer, other_texts) if other_texts else None
    for r in rows:
        beta, bias = r.pop("_params", (1.0 / r.get("temperature", 1.0), None))
        if other is not None:
            r["other_domain_nll"] = heldout_nll(*other, beta, bias)
    vector = [r for r in rows if r["lam"] is not None]
    chosen = min(vector, key=lambda r: r["val_nll"])
    temperature_row = rows[1]
    verdict = {
        "chosen_lam": chosen["lam"],
        "heldout_nll_temperature": temperature_row["heldout_nll"],
        "heldout_nll_vector": chosen["heldout_nll"],
        "improvement_nats": temperature_row["heldout_nll"] - chosen["heldout_nll"],
        "keep_vector_scaling": chosen["heldout_nll"] < temperature_row["heldout_nll"],
        "other_domain_nll_temperature": temperature_row.get("other_domain_nll"),
        "other_domain_nll_vector": chosen.get("other_domain_nll"),
        "other_domain_positions": None if other is None else int(other[1].shape[0]),
    }
    return {"figures": figures, "vector_scaling": {"rows": rows, "verdict": verdict,
                                                   "train_positions": cut, "val_positions": int(fit_y.shape[0] - cut)}}


# --------------------------------------------------------------------------------------------
# Memory with a 262,144-token vocabulary


_MEMORY_MODELS: dict = {}


def memory_check(name: str, texts: list[str], positions: int) -> dict:
    from logit_processors.models import load

    model, tokenizer = _MEMORY_MODELS.get(name) or _MEMORY_MODELS.setdefault(name, load(name, progress=True))
    vocab = model.get_output_embeddings().weight.shape[0]
    windows = text_windows(tokenizer, texts, max_length=window_length(model, MAX_LENGTH))
    kept, total = [], 0
    for w in windows:
        if total >= positions:
            break
        kept.append(w)
        total += len(w) - 1
    gc.collect()
    reset_peak_rss()
    rss_before = current_rss_mb()
    start = time.perf_counter()
    fitted = CalibratedTemperature.fit(model, tokenizer, kept, progress=False)
    elapsed = time.perf_counter() - start
    rss_after = peak_rss_mb()
    result = {"model": name, "vocabulary": vocab, "positions": total, "temperature": fitted.temperature,
              "fit_s": elapsed, "rss_mb_before_fit": rss_before, "peak_rss_mb_during_fit": rss_after,
              "peak_rss_growth_mb": rss_after - rss_before,
              "full_logits_would_need_mb": total * vocab * 4 / 2**20,
              "full_logits_200k_tokens_gb": 200_000 * vocab * 4 / 2**30}
    print(f"  {name}: V={vocab:,}, {total:,} positions, T={fitted.temperature:.4f} in {elapsed:.0f} s; RSS "
          f"{rss_before:.0f} MB before, {rss_after:.0f} MB at most during the fit (+{rss_after - rss_before:.0f} MB); "
          f"full logits would be "
          f"{result['full_logits_would_need_mb']:.0f} MB here, {result['full_logits_200k_tokens_gb']:.0f} GB for 200k tokens",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter texts, 2 rounds, fewer L-BFGS iterations")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved fit/forward rounds (3)")
    parser.add_argument("--chars", type=int, default=None, help="characters per pydoc topic (2500; --quick 800)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1; 0: torch's default)")
    parser.add_argument("--skip", action="append", default=[], choices=("cost", "figures"), help="skip a section")
    parser.add_argument("--memory-model", default=None, help="also fit this model and report peak memory")
    parser.add_argument("--memory-positions", default="500,2000",
                        help="comma-separated position counts for --memory-model (the peak must not grow with them)")
    parser.add_argument("--json", default="benchmarks/results/calibration.json", help="where to write the results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chars = args.chars or (800 if args.quick else 2500)
    rounds = args.rounds or (2 if args.quick else 3)
    from logit_processors.models import load

    load_start, started = os.getloadavg(), time.perf_counter()
    model, tokenizer = load("smollm2", dtype=torch.float32, progress=False)
    fit_texts, heldout_texts = halves(chars)
    out: dict = {"meta": {"threads": torch.get_num_threads(), "chars_per_topic": chars, "rounds": rounds,
                          "load_average_at_start": load_start}}
    if "cost" not in args.skip:
        print(f"Fit cost: {len(fit_texts)} calibration topics, {rounds} interleaved rounds", flush=True)
        out["fit_cost"] = fit_cost(model, tokenizer, fit_texts, rounds)
        r = out["fit_cost"]["ratios"]
        print(f"  fit / forward over {out['fit_cost']['positions']:,} positions: medians {r['medians']:.3f}, "
              f"minima {r['minima']:.3f}, per-round median {r['per_round_median']:.3f}", flush=True)
    if "figures" not in args.skip:
        print("Held-out figures and vector scaling", flush=True)
        out.update(figures_and_vector_scaling(model, tokenizer, fit_texts, heldout_texts, other_domain_text(4 * chars),
                                              15 if args.quick else 40))
        f = out["figures"]
        b, a = f["heldout_uncalibrated"], f["heldout_calibrated"]
        print(f"  T = {f['temperature']:.4f} (in-memory Newton {f['temperature_in_memory_newton']:.4f}), fitted on "
              f"{f['fit_positions']:,} positions")
        print(f"  held-out ({b['positions']:,} positions): NLL {b['nll']:.4f} -> {a['nll']:.4f}; ECE-15 width "
              f"{b['ece_width']:.4f} -> {a['ece_width']:.4f}; mass {b['ece_mass']:.4f} -> {a['ece_mass']:.4f}; "
              f"Brier {b['brier']:.4f} -> {a['brier']:.4f}; accuracy {b['accuracy']:.4f}")
        v = out["vector_scaling"]["verdict"]
        print(f"  vector scaling (lam {v['chosen_lam']:g} chosen on validation): held-out NLL "
              f"{v['heldout_nll_vector']:.5f} vs temperature alone {v['heldout_nll_temperature']:.5f} "
              f"({v['improvement_nats']:+.5f} nats): {'keep' if v['keep_vector_scaling'] else 'not kept'}")
        if v["other_domain_positions"]:
            print(f"  other domain (idlelib/NEWS.txt, {v['other_domain_positions']:,} positions): NLL "
                  f"{v['other_domain_nll_vector']:.5f} with the bias vs {v['other_domain_nll_temperature']:.5f} "
                  "with the temperature alone")
    if args.memory_model:
        print(f"Memory: {args.memory_model}", flush=True)
        out["memory"] = [memory_check(args.memory_model, fit_texts, int(n)) for n in args.memory_positions.split(",")]
    out["meta"].update({"elapsed_s": time.perf_counter() - started, "load_average_at_end": os.getloadavg()})
    if "fit_cost" in out:
        t = out["fit_cost"]["target"]
        print(f"\nTarget: [{'PASS' if t['pass'] else 'FAIL'}] {t['name']}: {t['value']:.3f}")
    print(f"Total time {out['meta']['elapsed_s']:.0f} s; load average at start {load_start}, at end "
          f"{out['meta']['load_average_at_end']}")
    print(f"Wrote {write_json(args.json, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
