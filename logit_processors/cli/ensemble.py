"""``logit-processors generate`` flags for ensembling and contrastive decoding.

    logit-processors generate "The with statement" --ensemble ./pydoc-gpt2:0.5 --combine logodds
    logit-processors generate "The with statement" --contrastive ./pydoc-gpt2 --alpha 1.0 --greedy

``--ensemble PATH_OR_NAME[:WEIGHT]`` (repeatable) adds a member model (a named offline model, a
directory written by ``save_pretrained`` or a hub id; weight 1 if omitted, negative allowed) to a
:class:`~logit_processors.LogOddsEnsemble` whose primary is ``--model``, weighted
``--primary-weight`` (default 1) and combined by ``--combine`` (``logprob``, ``logodds`` or
``mixture``; ``--adaptive``: mixture weights that learn online per row from the tokens generated,
starting from the given weights, :mod:`logit_processors.ensemble.adaptive`). A member with another
tokenizer (``--model smollm2 --ensemble gemma3-270m``) reads
the same text in its own tokens (:mod:`logit_processors.runtime.aligned_members`).
``--contrastive AMATEUR`` makes the primary the expert of
:class:`~logit_processors.ContrastiveDecoding` (``--alpha``, ``--plausibility``).
Members are loaded with the primary's ``--dtype`` and ``--device``, with their own tokenizers:
the same token ids as the primary's (combined id by id), or another tokenizer (aligned on text). The ensemble runs first: the other
processor flags (masks, temperature, truncation) then shape the ensemble's distribution.

Example:
    >>> parse_member("./models/pydoc-gpt2:0.5")
    ('./models/pydoc-gpt2', 0.5)
    >>> parse_member("HuggingFaceTB/SmolLM2-360M")
    ('HuggingFaceTB/SmolLM2-360M', 1.0)
"""

from __future__ import annotations

import argparse
import math

from ..ensemble import ContrastiveDecoding, LogOddsEnsemble
from ..models import ModelLoadError, load
from .common import fail, one_line

ENSEMBLE_FLAGS = ("ensemble", "contrastive")


def parse_member(text: str) -> tuple[str, float]:
    """``PATH_OR_NAME[:WEIGHT]`` as ``(name, weight)``: the part after the last ``:`` is the
    weight if it is a finite number (so a path may contain colons)."""
    name, sep, weight = text.rpartition(":")
    if sep and name:
        try:
            value = float(weight)
        except ValueError:
            pass
        else:
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"the weight in {text!r} must be a finite number")
            return name, value
    if not text.strip():
        raise argparse.ArgumentTypeError("expected PATH_OR_NAME[:WEIGHT]; got an empty value")
    return text, 1.0


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "ensembles",
        "Combine --model with other checkpoints, with its tokenizer or their own (applied before the other "
        "processor flags). See logit_processors.ensemble.",
    )
    group.add_argument("--ensemble", action="append", type=parse_member, default=[], metavar="PATH_OR_NAME[:WEIGHT]",
                       help="add a member model with this weight (default 1; repeatable; negative subtracts it)")
    group.add_argument("--combine", choices=("logprob", "logodds", "mixture"), default=None,
                       help="add weighted log-probabilities (product of experts; the default) or log-odds, or average "
                            "the probabilities (mixture)")
    group.add_argument("--adaptive", action="store_true", default=None,
                       help="mixture weights that learn, per row, from each model's probability of the tokens "
                            "generated so far, starting from the given weights (implies --combine mixture)")
    group.add_argument("--primary-weight", type=_finite, default=None, metavar="W",
                       help="weight of --model in the ensemble (default 1)")
    group.add_argument("--contrastive", metavar="AMATEUR", default=None,
                       help="contrastive decoding: --model is the expert, AMATEUR the amateur (Li et al., 2022)")
    group.add_argument("--alpha", type=_finite, default=None, metavar="A",
                       help="weight of the amateur's log-probabilities (default 1)")
    group.add_argument("--plausibility", type=_finite, default=None, metavar="P",
                       help="keep tokens with p_expert >= P * max p_expert (default 0.1)")


def check_flags(args: argparse.Namespace) -> None:
    """Flag values and combinations that cannot work, before any model is loaded."""
    ensemble, contrastive = getattr(args, "ensemble", []), getattr(args, "contrastive", None)
    if ensemble and contrastive:
        raise fail("use either --ensemble or --contrastive, not both")
    for flag, needs, given in (("combine", "ensemble", ensemble), ("primary_weight", "ensemble", ensemble),
                               ("adaptive", "ensemble", ensemble),
                               ("alpha", "contrastive", contrastive), ("plausibility", "contrastive", contrastive)):
        if getattr(args, flag, None) is not None and not given:
            raise fail(f"--{flag.replace('_', '-')} needs --{needs}")
    if getattr(args, "guard", None) is not None and (ensemble or contrastive):
        raise fail("--guard cannot be combined with --ensemble or --contrastive")
    if getattr(args, "adaptive", None) and getattr(args, "combine", None) not in (None, "mixture"):
        raise fail("argument --adaptive: adaptive weights are mixture weights; use --combine mixture, "
                   f"not {args.combine}")
    if getattr(args, "adaptive", None) and any(w < 0 for w in _weights(args)):
        raise fail(f"argument --adaptive: mixture weights must be >= 0; got {_weights(args)}")
    if ensemble and all(w == 0 for w in _weights(args)):
        raise fail(f"argument --ensemble: at least one weight must be nonzero; got {_weights(args)}")
    if getattr(args, "alpha", None) is not None and args.alpha < 0:
        raise fail(f"argument --alpha: must be >= 0 (the amateur's weight); got {args.alpha}")
    if getattr(args, "plausibility", None) is not None and not 0 <= args.plausibility <= 1:
        raise fail(f"argument --plausibility: must be in [0, 1]; got {args.plausibility}")


def _weights(args: argparse.Namespace) -> list[float]:
    return [1.0 if args.primary_weight is None else args.primary_weight, *(w for _, w in args.ensemble)]


def processors(args: argparse.Namespace, tokenizer) -> list:
    """The ensemble or contrastive processor the flags ask for (loading its models), or ``[]``."""
    ensemble, contrastive = getattr(args, "ensemble", []), getattr(args, "contrastive", None)
    if not ensemble and contrastive is None:
        return []
    flag = "--ensemble" if ensemble else "--contrastive"
    try:
        loaded = [load(name, dtype=args.dtype, device=args.device, progress=False)
                  for name in ([name for name, _ in ensemble] or [contrastive])]
        models, tokenizers = [m for m, _ in loaded], [tokenizer, *(t for _, t in loaded)]
        if ensemble:
            adaptive = bool(getattr(args, "adaptive", None))  # --adaptive implies --combine mixture
            combine = "mixture" if adaptive else args.combine or "logprob"
            return [LogOddsEnsemble(models, _weights(args), combine=combine, tokenizer=tokenizers, adaptive=adaptive)]
        return [ContrastiveDecoding(
            models[0],
            alpha=1.0 if args.alpha is None else args.alpha,
            plausibility=0.1 if args.plausibility is None else args.plausibility,
            tokenizer=tokenizers,
        )]
    except (ModelLoadError, ValueError, TypeError, OSError) as error:
        raise fail(f"argument {flag}: {one_line(error)}") from error
