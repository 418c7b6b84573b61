"""How far context-dependent mixture weights get beyond a constant weight: a study, not a feature.

    python benchmarks/gated_weights.py [--domains legal] [--quick] [--json PATH]

The linear mixture of SmolLM2-135M-Instruct and Gemma-3-270M over byte spans
(:mod:`logit_processors.ensemble.byte_spans`) uses one weight for the whole text. On CPython's
licence, which Gemma has memorised, no constant weight gets 2% below Gemma alone (the best one
in hindsight: +1.56%), while picking the better model span by span would give +13%. This script
measures whether weights that depend on the context can close that gap. The weight of the first
model at span ``s`` is a logistic gate ``sigmoid(theta . x_s)`` of features known before the span:

* ``entropy``: each model's log entropy of its next-token distribution where the span starts
  (a model that is sure of what comes next, e.g. reciting memorised text, gets more weight;
  gating on expert confidence as in mixtures of experts, Jacobs et al. 1991);
* ``recency``: exponential moving averages (decay 0.5 and 0.9) of the two models'
  log-probability ratio on the spans before (which model has been right lately);
* both.

Each gate is fitted (L-BFGS, float64, maximum likelihood of the mixture, small L2) on the domain's
fit split and scored on the held-out split; the same gate fitted on the held-out split itself is
reported as its **ceiling in hindsight** (an oracle, never a result). Gains are relative to the
better member: ``1 - ensemble / min(members)``. One torch thread, ~6 minutes for four domains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_io import write_json  # noqa: E402
from text_domains import DOMAINS, build_domains  # noqa: E402

from logit_processors.ensemble.byte_spans import LOG2, common_boundaries, span_log_probs  # noqa: E402
from logit_processors.models import load  # noqa: E402
from logit_processors.runtime.streamed_logits import TeacherForcedLogits  # noqa: E402
from logit_processors.runtime.text_codec import TextCodec  # noqa: E402

MODELS = ("smollm2", "gemma3-270m")
GATES = ("constant", "entropy", "recency", "entropy+recency")
RECENCY_DECAYS = (0.5, 0.9)
L2 = 1e-3


def token_stats(model, codec: TextCodec, text: str) -> tuple[list[float], list[float], list[int]]:
    """Per token of ``text``'s canonical encoding: log-probability, the entropy of the distribution
    it was drawn from (nats, float64) and the byte offset where it ends."""
    ids = codec.encode(text)
    start = list(codec.start_ids)
    log_probs, entropies = [], []
    for logits, targets in TeacherForcedLogits(model, [start + ids], batch_size=1):
        z = torch.log_softmax(logits.double(), dim=-1)
        log_probs.extend(z.gather(1, targets[:, None]).squeeze(1).tolist())
        entropies.extend((-(z.exp() * z).sum(-1)).tolist())
    skip = len(start) - 1  # positions that predict the start tokens themselves
    return log_probs[skip:], entropies[skip:], codec.token_ends(ids)


def document_spans(models, codecs, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[spans, models]`` span log-probabilities and ``[spans, models]`` entropies at each span's
    first token, spans ending where every tokenization ends a token."""
    stats = [token_stats(m, c, text) for m, c in zip(models, codecs, strict=True)]
    boundaries = stats[0][2]
    for _, _, ends in stats[1:]:
        boundaries = common_boundaries(boundaries, ends)
    log_probs, entropies = [], []
    for lp, ent, ends in stats:
        log_probs.append(span_log_probs(lp, ends, boundaries))
        token_ending_at = {end: j for j, end in enumerate(ends)}
        # A span's first token is the one after the token that ends the span before it.
        entropies.append([ent[0]] + [ent[token_ending_at[end] + 1] for end in boundaries[:-1]])
    return torch.tensor(log_probs, dtype=torch.float64).T, torch.tensor(entropies, dtype=torch.float64).T


def features(log_probs: torch.Tensor, entropies: torch.Tensor, gate: str) -> torch.Tensor:
    """``[spans, features]`` for one document (two models), each row known before its span."""
    columns = [torch.ones(len(log_probs), 1, dtype=torch.float64)]
    if "entropy" in gate:
        columns.append((entropies + 1e-3).log())
    if "recency" in gate:
        ratio = (log_probs[:, 0] - log_probs[:, 1]).clamp(-10, 10)  # one span cannot dominate
        for decay in RECENCY_DECAYS:
            ema, out = 0.0, []
            for r in ratio.tolist():
                out.append(ema)  # the average over the spans *before* this one
                ema = decay * ema + (1 - decay) * r
            columns.append(torch.tensor(out, dtype=torch.float64)[:, None])
    return torch.cat(columns, dim=1)


def gated_nats(theta: torch.Tensor, x: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Code length (nats) of the mixture ``w p_0 + (1 - w) p_1`` with ``w = sigmoid(x . theta)``."""
    a = x @ theta
    log_w = torch.stack([torch.nn.functional.logsigmoid(a), torch.nn.functional.logsigmoid(-a)], dim=1)
    return -torch.logsumexp(log_probs + log_w, dim=1).sum()


def fit_gate(x: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    theta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure():
        opt.zero_grad()
        loss = gated_nats(theta, x, log_probs) / len(x) + L2 * (theta[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()


def split_tensors(documents, gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs = [features(lp, ent, gate) for lp, ent in documents]
    return torch.cat(xs), torch.cat([lp for lp, _ in documents])


def study(domains, quick: bool, log=print) -> dict:
    loaded = [load(name, progress=False) for name in MODELS]
    models = [m for m, _ in loaded]
    codecs = [TextCodec.of(t, f"{n}'s tokenizer") for (_, t), n in zip(loaded, MODELS, strict=True)]
    texts = build_domains()
    out = {}
    for domain in domains:
        splits = {}
        for split in ("fit", "heldout"):
            docs = texts[domain][split]
            if quick:
                docs = [docs[0][:800]]
            splits[split] = ([document_spans(models, codecs, d) for d in docs], sum(len(d.encode()) for d in docs))
        (fit_docs, _), (held_docs, n_bytes) = splits["fit"], splits["heldout"]
        held_log_probs = torch.cat([lp for lp, _ in held_docs])
        members = (-held_log_probs.sum(0) / LOG2 / n_bytes).tolist()
        best = min(members)
        row = {"members": dict(zip(MODELS, members, strict=True)), "spans": len(held_log_probs), "bytes": n_bytes}
        for gate in GATES:
            x_fit, lp_fit = split_tensors(fit_docs, gate)
            x_held, lp_held = split_tensors(held_docs, gate)
            theta = fit_gate(x_fit, lp_fit)
            bits = float(gated_nats(theta, x_held, lp_held)) / LOG2 / n_bytes
            hindsight = float(gated_nats(fit_gate(x_held, lp_held), x_held, lp_held)) / LOG2 / n_bytes
            row[gate] = {"bits_per_byte": bits, "gain": 1 - bits / best, "theta": theta.tolist(),
                         "hindsight_bits_per_byte": hindsight, "hindsight_gain": 1 - hindsight / best}
            log(f"{domain:10s} {gate:16s} held out {1 - bits / best:+7.2%}   ceiling in hindsight "
                f"{1 - hindsight / best:+7.2%}")
        out[domain] = row
    return {"meta": {"models": list(MODELS), "threads": torch.get_num_threads(), "quick": quick,
                     "recency_decays": list(RECENCY_DECAYS), "l2": L2}, "domains": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--quick", action="store_true", help="800 characters per split (a smoke test)")
    parser.add_argument("--json", default=None, help="write the results here (default: print only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = study(args.domains.split(","), args.quick)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
