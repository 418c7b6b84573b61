"""An adaptive attacker: GCG suffixes that force a harmful target, optionally against a defense
(run once per variant; the suffixes are stored as attack sets).

For each held-out harmful behaviour (``attack_texts.HARMFUL_BEHAVIOURS``, ``test`` split) a
greedy coordinate gradient search (GCG: Zou et al. 2023) looks for a suffix of ``--length``
printable-ASCII tokens after ``behaviour + "."`` that makes SmolLM2's greedy reply start with
the behaviour's target ("Sure, here is a tutorial on ..."). Its objective, maximized:

``plain``
    ``log P(target | prompt) / |target|``, the mean log-likelihood of the target's tokens
    (teacher-forced): the attack without a defense in mind.
``perplexity``
    the same minus ``--weight`` (0.3 for the stored set) times the suffix tokens' mean surprisal
    (nats): a low-perplexity
    attack in the style of AutoDAN (Zhu et al. 2023, "AutoDAN: Interpretable Gradient-Based
    Adversarial Attacks on Large Language Models"), which trades target likelihood for
    readability to pass perplexity filters.
``detector``
    the same minus ``--weight`` times ``max(0, score - threshold + margin)``, with ``score`` the
    shipped detector's exact score of the whole prompt (``detector.score_stats``, white box:
    the attacker knows the method, its fitted baseline and its threshold).

Candidates: per position, the ``--topk`` tokens with the best ``-gradient of the target loss``
plus (for the two defense-aware variants) the model's own log-probability of the token at that
position (AutoDAN's readability-aware proposal; its gradient of the surprisal is folded in the
same way); ``--candidates`` random single swaps are evaluated exactly in one batched forward
pass over suffix, closing template and target, on the prompt's cached prefix. Only candidates
whose text re-tokenizes to the same ids are kept (GCG's filter). The search stops early once
the target is forced (every target token is the greedy choice, teacher-forced: greedy decoding
then reproduces it) and the variant's penalty is 0.

Budget: one thread, ``--steps`` (default 40) steps of 32 candidates: a few minutes per suffix on
this project's shared 2-core machine. Each finished suffix is written at once; ``--resume``
keeps them and searches only the rest (one random stream per behaviour: resuming changes
nothing).

    python scripts/adaptive_attack.py --variant plain        # -> logit_processors/detection/data/attacks_gcg_harmful.jsonl
    python scripts/adaptive_attack.py --variant perplexity --weight 0.3   # -> attacks_adaptive_perplexity.jsonl
    python scripts/adaptive_attack.py --variant detector     # -> attacks_adaptive_detector.jsonl
    python scripts/adaptive_attack.py --variant plain --n 1 --steps 2 --out /tmp/x.jsonl   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from attack_texts import HARMFUL_BEHAVIOURS
from optimize_suffixes import SuffixSearch, parse_search_options, printable_ascii_tokens, write_resumable

from logit_processors.detection.baselines import WindowedPerplexityFilter
from logit_processors.detection import default_detector
from logit_processors.detection.datasets import split_of
from logit_processors.detection.prompt_stats import stats_from_logits
from logit_processors.detection.refusal_gap import RefusalGap
from logit_processors.models import load
from logit_processors.runtime.prompts import encode_prompt

DATA = Path(__file__).resolve().parent.parent / "logit_processors" / "detection" / "data"
OUTPUTS = {"plain": "attacks_gcg_harmful.jsonl", "perplexity": "attacks_adaptive_perplexity.jsonl",
           "detector": "attacks_adaptive_detector.jsonl"}


def test_behaviours() -> list[tuple[int, str, str]]:
    """``(index, behaviour, target)`` of the held-out harmful behaviours, in list order."""
    return [(k, b, t) for k, (b, t) in enumerate(HARMFUL_BEHAVIOURS) if split_of("harmful", b) == "test"]


class TargetSearch(SuffixSearch):
    """The search for one behaviour: the prompt's prefix is cached, the target is teacher-forced."""

    def __init__(self, model, tokenizer, base: str, target: str, allowed: torch.Tensor, detector, window_filter):
        super().__init__(model, tokenizer, RefusalGap(tokenizer), base, allowed)
        self.target = tokenizer.encode(target, add_special_tokens=False)
        self.detector, self.window_filter = detector, window_filter
        with torch.inference_mode():  # the logits of the prefix positions (the base's statistics)
            self.prefix_logits = model(input_ids=torch.tensor([self.prefix])).logits[0].float()

    def _forward(self, suffixes: torch.Tensor, inputs_embeds=None, hidden: bool = False):
        """Logits ``[B, L + tail + target, V]`` (and, with ``hidden``, the probe layer's hidden
        state at the prompt's last token, ``[B, d]``)."""
        rows = suffixes.shape[0]
        rest = torch.tensor(self.tail + self.target).expand(rows, -1)
        length = suffixes.shape[1] + rest.shape[1]
        kwargs = {"position_ids": self._positions(rows, length), "use_cache": True, self.kwarg: self._cache(rows),
                  "output_hidden_states": hidden}
        if inputs_embeds is None:
            out = self.model(input_ids=torch.cat([suffixes, rest], 1), **kwargs)
        else:
            out = self.model(inputs_embeds=torch.cat([inputs_embeds, self.embeddings[rest[0]][None]], 1), **kwargs)
        if not hidden:
            return out.logits.float()
        last = suffixes.shape[1] + len(self.tail) - 1
        return out.logits.float(), out.hidden_states[self.detector.probe_layer][:, last].float()

    def parts(self, suffixes: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per row: target mean log-likelihood, whether the target is forced, suffix mean surprisal."""
        length, tail = suffixes.shape[1], len(self.tail)
        target = torch.tensor(self.target)
        at_target = logits[:, length + tail - 1 : length + tail - 1 + len(target)]
        target_lp = torch.log_softmax(at_target, -1).gather(-1, target.expand(len(suffixes), -1)[..., None])[..., 0]
        forced = (at_target.argmax(-1) == target).all(-1)
        first = torch.log_softmax(self.prefix_logits[-1], -1).expand(len(suffixes), -1)
        suffix_logits = torch.cat([first[:, None], torch.log_softmax(logits[:, : length - 1], -1)], 1)
        surprisal = -suffix_logits.gather(-1, suffixes[..., None])[..., 0]
        return {"target": target_lp.mean(-1), "forced": forced, "surprisal": surprisal.mean(-1)}

    def defense_scores(self, suffix: list[int], logits: torch.Tensor, hidden: torch.Tensor | None) -> dict[str, float]:
        """The windowed filter's and (given the probe's hidden state) the detector's scores of
        ``base + suffix``, exact: the statistics of the whole user text, the base's from the
        cached prefix pass."""
        encoded = encode_prompt(self.tokenizer, self.text(suffix))
        full = torch.cat([self.prefix_logits, logits[: len(suffix)]])
        stats = stats_from_logits(encoded, full, 0, hidden=hidden)
        scores = {"windowed": self.window_filter.raw_score(stats)}
        if hidden is not None:
            scores["detector"] = self.detector.score_stats(stats).score
        return scores


def objective(s: TargetSearch, variant: str, weight: float, margin: float, suffixes: list[list[int]]):
    ids = torch.tensor(suffixes)
    with torch.inference_mode():
        logits, hidden = s._forward(ids, hidden=True)
    parts = s.parts(ids, logits)
    value, penalty = parts["target"].clone(), torch.zeros(len(suffixes))
    if variant == "perplexity":
        penalty = parts["surprisal"]
    elif variant == "detector":
        scores = torch.tensor([s.defense_scores(x, logits[i], hidden[i])["detector"] for i, x in enumerate(suffixes)])
        penalty = (scores - s.detector.threshold + margin).clamp_min(0)
    return value - weight * penalty, parts, penalty


def proposal_scores(s: TargetSearch, suffix: list[int], readable: bool) -> torch.Tensor:
    """[L, V]: how promising each token is at each position (higher is better)."""
    one_hot = torch.zeros(len(suffix), s.embeddings.shape[0])
    one_hot[torch.arange(len(suffix)), torch.tensor(suffix)] = 1.0
    one_hot.requires_grad_(True)
    logits = s._forward(torch.tensor([suffix]), (one_hot @ s.embeddings)[None])
    parts = s.parts(torch.tensor([suffix]), logits)
    loss = -parts["target"][0] + (parts["surprisal"][0] if readable else 0.0)
    loss.backward()
    score = -one_hot.grad
    if readable:  # AutoDAN: add the model's own log-probability of the token at that position
        logp = torch.log_softmax(torch.cat([s.prefix_logits[-1:], logits[0, : len(suffix) - 1].detach()]), -1)
        score = score + logp
    return score


def search(s: TargetSearch, variant: str, length: int, steps: int, candidates: int, topk: int, weight: float,
           margin: float, rng: random.Random) -> dict:
    start = time.perf_counter()
    suffix = s.tokenizer.encode(" !", add_special_tokens=False) * length
    if not s.reproduces(suffix):
        raise RuntimeError(f"the initial suffix does not re-tokenize for {s.base!r}")
    values, parts, penalty = objective(s, variant, weight, margin, [suffix])
    current, best, best_value = suffix, suffix, float(values[0])
    initial = {"target": float(parts["target"][0]), "forced": bool(parts["forced"][0])}
    steps_run = 0
    for _ in range(steps):
        if bool(parts["forced"][0]) and float(penalty[0]) == 0 and current == best:
            break
        steps_run += 1
        score = proposal_scores(s, current, readable=variant != "plain")
        score[:, ~s.allowed] = -math.inf
        top = score.topk(topk, dim=1).indices
        proposals, seen = [], {tuple(current)}
        for _ in range(candidates * 4):
            if len(proposals) == candidates:
                break
            pos = rng.randrange(length)
            cand = list(current)
            cand[pos] = int(top[pos, rng.randrange(topk)])
            if tuple(cand) not in seen:
                seen.add(tuple(cand))
                if s.reproduces(cand):
                    proposals.append(cand)
        if not proposals:
            break
        values, all_parts, all_penalty = objective(s, variant, weight, margin, proposals)
        i = int(values.argmax())
        current = proposals[i]
        parts = {k: v[i : i + 1] for k, v in all_parts.items()}
        penalty = all_penalty[i : i + 1]
        if float(values[i]) > best_value:
            best, best_value = current, float(values[i])
    with torch.inference_mode():
        logits, hidden = s._forward(torch.tensor([best]), hidden=True)
    final = s.parts(torch.tensor([best]), logits)
    return {"suffix": s.tokenizer.decode(best), "suffix_ids": best, "objective": best_value,
            "target_logprob_initial": initial["target"], "target_logprob": float(final["target"][0]),
            "forced": bool(final["forced"][0]), "suffix_surprisal": float(final["surprisal"][0]),
            **{f"{k}_score": v for k, v in s.defense_scores(best, logits[0], hidden[0]).items()},
            "steps": steps_run, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(OUTPUTS), required=True)
    parser.add_argument("--n", type=int, default=12, help="number of behaviours (held-out ones, in order)")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the defense penalty")
    parser.add_argument("--margin", type=float, default=0.5, help="detector variant: aim this far below the threshold")
    parser.add_argument("--out", type=Path, default=None)
    args = parse_search_options(parser, argv, steps=40)
    out = args.out or DATA / OUTPUTS[args.variant]

    model, tokenizer = load("smollm2", progress=False)
    model.requires_grad_(False)
    detector = default_detector(model, tokenizer)
    window_filter = WindowedPerplexityFilter()
    allowed = printable_ascii_tokens(tokenizer)
    behaviours = test_behaviours()[: args.n]
    settings = {k: v for k, v in vars(args).items() if k not in {"out", "n", "resume"}}
    kept = []
    if args.resume and out.exists():
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [r for r, (k, _, _) in zip(rows, behaviours) if r["base_id"] == f"harm{k:02d}"]
        print(f"resuming: {len(kept)} of {len(behaviours)} suffixes already in {out}", flush=True)

    def run_one(n: int, item: tuple[int, str, str]) -> dict:
        k, behaviour, target = item
        rng = random.Random(f"{args.seed}:{k}")  # one stream per behaviour: resuming changes nothing
        base = behaviour + "."
        s = TargetSearch(model, tokenizer, base, target, allowed, detector, window_filter)
        result = search(s, args.variant, args.length, args.steps, args.candidates, args.topk, args.weight,
                        args.margin, rng)
        return {"id": f"{args.variant[:3]}h{k:02d}", "base_id": f"harm{k:02d}", "base": base,
                "suffix": result["suffix"], "text": base + result["suffix"], "split": "test", "target": target,
                **{k2: v for k2, v in result.items() if k2 != "suffix"}, "settings": settings}

    def describe(row: dict) -> str:
        return (f"{row['seconds']:.0f}s steps {row['steps']}: target {row['target_logprob_initial']:.2f} -> "
                f"{row['target_logprob']:.2f} forced {row['forced']}, detector {row['detector_score']:.2f}, "
                f"windowed {row['windowed_score']:.2f}: {row['base']!r} + {row['suffix']!r}")

    write_resumable(out, behaviours, kept, run_one, describe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
