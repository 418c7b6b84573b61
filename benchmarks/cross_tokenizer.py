"""SmolLM2-135M-Instruct and Gemma-3-270M, two tokenizers, ensembled: bits per byte on held-out text.

    python benchmarks/cross_tokenizer.py [--domains prose,code] [--no-generation] [--quick] [--json PATH]

For each domain of :mod:`text_domains` (held-out text, and a separate fit split of ~3,000
characters on which every weight and temperature is fitted; nothing is tuned on held-out text):

* **exact** (``score-text``): each model's bits per byte on its canonical tokenization, and the
  linear mixture over byte spans that end where both tokenizations end a token
  (:mod:`logit_processors.ensemble.byte_spans`), its weight fitted by EM on the fit split; raw,
  and with each model's temperature calibrated on the fit split first;
* **generation mode**: the distribution ``LogOddsEnsemble`` generates from, SmolLM2 the primary
  (Gemma's probability of each SmolLM2 token computed from Gemma's own tokens of the same text,
  :mod:`logit_processors.runtime.aligned_members`), teacher-forced on SmolLM2's tokenization: a
  mixture (weight fitted by EM on the fit split) and a product of experts (member weight picked
  on the fit split from a grid);
* **adaptive** (``--adaptive``, on by default): the mixture whose weight learns online from the text
  scored so far (:mod:`logit_processors.ensemble.adaptive`; each document from a prior fitted on the
  fit split, half uniform), on the exact spans and in generation mode, beside the **best constant
  weight in hindsight** (EM on the held-out text itself: an oracle, reported only as the ceiling
  of constant weights). Also in the JSON: adaptive from a uniform prior, and carried across the
  held-out documents instead of restarting per document.

Gains are relative to the better member on that domain: ``1 - ensemble / min(members)``.
One torch thread; the generation mode runs Gemma once per SmolLM2 token (~20 minutes in all).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_io import write_json  # noqa: E402
from text_domains import DOMAINS, build_domains  # noqa: E402

from logit_processors.calibration import CalibratedTemperature  # noqa: E402
from logit_processors.ensemble.adaptive import AdaptiveMixture  # noqa: E402
from logit_processors.ensemble.byte_spans import LOG2, fit_mixture_weights, score_spans  # noqa: E402
from logit_processors.ensemble.generation_score import PRODUCT_WEIGHTS, generation_scores  # noqa: E402
from logit_processors.models import load  # noqa: E402
from logit_processors.runtime.text_codec import TextCodec  # noqa: E402

MODELS = ("smollm2", "gemma3-270m")
#: The span / position matrices the adaptive scores were computed from, saved beside the JSON.
MATRICES: dict[str, dict[str, object]] = {}


def gain(ensemble: float, members: list[float]) -> float:
    return 1.0 - ensemble / min(members)


def adaptive_scores(fit_matrix, held_documents, n_bytes: int, members: list[float], key: str = "") -> dict:
    """The adaptive mixture on held-out documents (each from the prior fitted on ``fit_matrix``), with
    the variants the JSON keeps, and the best constant weight in hindsight (the oracle ceiling)."""
    bits = LOG2 * n_bytes
    MATRICES[key] = {"fit": fit_matrix, "heldout": held_documents, "bytes": n_bytes}
    fitted, uniform = AdaptiveMixture.fitted(fit_matrix), AdaptiveMixture(fit_matrix.shape[1])
    nats, final = fitted.score_documents(held_documents)
    carried = fitted.score_documents([torch.cat(held_documents)])[0]
    everything = torch.cat(held_documents)
    oracle_weights = fit_mixture_weights(everything)
    oracle = -float(torch.logsumexp(everything + torch.tensor(oracle_weights, dtype=torch.float64).log(), 1).sum())
    return {"ensemble": nats / bits, "gain": gain(nats / bits, members), "final_weights": final,
            "regret_bound_nats_per_document": fitted.regret_bound(), "documents": len(held_documents),
            "uniform_prior": uniform.score_documents(held_documents)[0] / bits,
            "carried_across_documents": carried / bits,
            "oracle_constant": oracle / bits, "oracle_gain": gain(oracle / bits, members),
            "oracle_weights": oracle_weights}


def exact_scores(models, codecs, fit, heldout, temperatures=None, adaptive=False, key="") -> dict:
    fit_scores = score_spans(models, codecs, fit, temperatures)
    held = score_spans(models, codecs, heldout, temperatures)
    weights = fit_mixture_weights(fit_scores.matrix())
    members = held.member_bits_per_byte()
    ensemble = held.mixture_bits_per_byte(weights)
    out = {"members": dict(zip(MODELS, members, strict=True)), "ensemble": ensemble, "weights": weights,
           "gain": gain(ensemble, members), "spans": int(held.matrix().shape[0]), "bytes": held.n_bytes}
    if adaptive:
        out["adaptive"] = adaptive_scores(fit_scores.matrix(), held.per_document(), held.n_bytes, members, key)
    return out


def generation_mode(models, tokenizers, fit, heldout, temperatures=None, adaptive=False, members=None,
                    key="") -> dict:
    args = (models[0], tokenizers[0], [models[1]], [tokenizers[1]])
    fit_scores = generation_scores(*args, fit, temperatures=temperatures)
    held = generation_scores(*args, heldout, temperatures=temperatures)
    weights = fit_scores.fit_mixture()
    grid_fit = fit_scores.product_bits_per_byte()
    best = min(range(len(grid_fit)), key=grid_fit.__getitem__)
    primary, member = held.bits_per_byte([1, 0]), held.bits_per_byte([0, 1])
    mixture, product = held.bits_per_byte(weights), held.product_bits_per_byte()[best]
    out = {"primary": primary, "member_on_primary_tokens": member, "mixture": mixture, "mixture_weights": weights,
           "product": product, "product_member_weight": PRODUCT_WEIGHTS[best], "positions": int(held.targets.shape[0]),
           "bytes": held.n_bytes}
    if adaptive:
        out["adaptive"] = adaptive_scores(fit_scores.targets, held.per_document(), held.n_bytes, members, key)
    return out


def run(domains, generation: bool, quick: bool, adaptive: bool = True, log=print) -> dict:
    loaded = [load(name, progress=False) for name in MODELS]
    models, tokenizers = [m for m, _ in loaded], [t for _, t in loaded]
    codecs = [TextCodec.of(t, name) for t, name in zip(tokenizers, MODELS, strict=True)]
    data = build_domains()
    results = {}
    for domain in domains:
        fit, heldout = data[domain]["fit"], data[domain]["heldout"]
        if quick:
            fit, heldout = [fit[0][:800]], [heldout[0][:800]]
        started = time.perf_counter()
        calibrations = [CalibratedTemperature.fit(m, t, fit, progress=False) for m, t in zip(models, tokenizers, strict=True)]
        temps = [c.temperature for c in calibrations]
        row = {"raw": exact_scores(models, codecs, fit, heldout, adaptive=adaptive, key=f"{domain}/raw"),
               "calibrated": {**exact_scores(models, codecs, fit, heldout, temps, adaptive=adaptive,
                                             key=f"{domain}/calibrated"),
                              "temperatures": temps}}
        log(f"{domain}: exact {json.dumps(row)} ({time.perf_counter() - started:.0f} s)")
        if generation:
            row["generation"] = generation_mode(models, tokenizers, fit, heldout, adaptive=adaptive,
                                                members=list(row["raw"]["members"].values()),
                                                key=f"{domain}/generation")
            log(f"{domain}: generation mode {json.dumps(row['generation'])} ({time.perf_counter() - started:.0f} s)")
        row["seconds"] = time.perf_counter() - started
        results[domain] = row
    print_table(results)
    return {"meta": {"models": list(MODELS), "threads": torch.get_num_threads(), "quick": quick, "adaptive": adaptive},
            "domains": results}


def print_table(results: dict) -> None:
    print(f"\n{'domain':10s} {'bytes':>6s} {'SmolLM2':>8s} {'Gemma':>7s} {'mixture':>8s} {'gain':>6s} "
          f"{'calibrated T':>13s} {'mixture':>8s} {'gain':>6s} {'gen mixture':>12s} {'gain':>6s} {'gen product':>12s} {'gain':>6s}")
    for domain, row in results.items():
        raw, cal = row["raw"], row["calibrated"]
        members = list(raw["members"].values())
        line = (f"{domain:10s} {raw['bytes']:6d} {members[0]:8.4f} {members[1]:7.4f} {raw['ensemble']:8.4f} "
                f"{raw['gain']:6.1%} {cal['temperatures'][0]:6.3f}/{cal['temperatures'][1]:.3f} {cal['ensemble']:8.4f} "
                f"{cal['gain']:6.1%}")
        gen = row.get("generation")
        if gen:
            line += (f" {gen['mixture']:12.4f} {gain(gen['mixture'], members):6.1%} {gen['product']:12.4f} "
                     f"{gain(gen['product'], members):6.1%}")
        print(line)
    adaptive = [(d, r) for d, r in results.items() if "adaptive" in r["raw"]]
    if adaptive:
        print(f"\n{'domain':10s} {'constant':>8s} {'gain':>6s} {'adaptive':>8s} {'gain':>6s} {'oracle':>8s} {'gain':>6s}"
              f" {'gen const':>9s} {'gen adapt':>9s} {'gain':>6s} {'gen oracle':>10s} {'gain':>6s}")
    for domain, row in adaptive:
        raw, members = row["raw"], list(row["raw"]["members"].values())
        ad = raw["adaptive"]
        line = (f"{domain:10s} {raw['ensemble']:8.4f} {raw['gain']:6.1%} {ad['ensemble']:8.4f} {ad['gain']:6.1%} "
                f"{ad['oracle_constant']:8.4f} {ad['oracle_gain']:6.1%}")
        gen = row.get("generation")
        if gen and "adaptive" in gen:
            ga = gen["adaptive"]
            line += (f" {gen['mixture']:9.4f} {ga['ensemble']:9.4f} {ga['gain']:6.1%} {ga['oracle_constant']:10.4f} "
                     f"{ga['oracle_gain']:6.1%}")
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--no-generation", action="store_true", help="skip the generation-mode scores (the slow part)")
    parser.add_argument("--quick", action="store_true", help="800 characters per split (a smoke test)")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                        help="also score adaptive mixture weights and the best constant weight in hindsight")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/cross_tokenizer.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    section = run(args.domains.split(","), not args.no_generation, args.quick, args.adaptive)
    print(f"Wrote {write_json(args.json, section)}")
    if MATRICES:
        torch.save(MATRICES, Path(args.json).with_suffix(".matrices.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
