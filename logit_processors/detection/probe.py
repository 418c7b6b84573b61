"""A linear probe on the model's hidden state: the detector's channel for fluent attacks.

Fluent attacks (an appended "Ignore all previous instructions and ...", a role-play or
"developer mode" jailbreak) are ordinary text token by token: their surprisal is that of any
request, and no per-token statistic separates them from benign traffic (on this project's
held-out sets their AUROC from token statistics is 0.5-0.75). The model still *represents* what
it is being asked: its hidden state at the end of the prompt, where it is about to answer,
encodes that an instruction is trying to override its own (linear probes read such
representations: Alain & Bengio 2016, "Understanding intermediate layers using linear
classifier probes"; for jailbreaks, Arditi et al. 2024, "Refusal in Language Models Is
Mediated by a Single Direction", and the probe-based defenses that followed).

:class:`LinearProbe` is a class-balanced, L2-regularized logistic regression on standardized
features (the hidden state of one middle layer at the prompt's last token), fitted with L-BFGS
in float64. Its benign calibration must not use the prompts it was fitted on (a probe is
confident on its own training set), so :func:`out_of_fold_scores` scores every benign prompt
with a probe fitted without it (k-fold cross-fitting).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> benign, attacks = torch.randn(200, 8, generator=g), torch.randn(40, 8, generator=g) + 2.0
    >>> probe = LinearProbe.fit(attacks, benign, l2=0.1)
    >>> bool(probe(attacks).mean() > probe(benign).mean() + 2)
    True
    >>> out_of_fold_scores(attacks, benign, l2=0.1, folds=5).shape   # one score per benign row
    torch.Size([200])
"""

from __future__ import annotations

import torch

from ..validate import positive_finite_float, positive_int


class LinearProbe:
    """``score(x) = w . (x - mean) / std + b``: a logistic regression's logit (higher: more like
    the positive class). Fitted with :meth:`fit`; saved with :meth:`to_dict`."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: float):
        self.mean, self.std = mean.double(), std.double()
        self.weight, self.bias = weight.double(), float(bias)

    @classmethod
    def fit(cls, positives: torch.Tensor, negatives: torch.Tensor, *, l2: float = 0.1,
            max_iter: int = 200) -> LinearProbe:
        """Minimize the class-balanced logistic loss (each class weighs one half) plus
        ``l2 * |w|^2`` on features standardized by the negatives' mean and the pooled standard
        deviation. ``positives [P, d]``, ``negatives [N, d]``."""
        l2 = positive_finite_float("l2", l2)
        if positives.dim() != 2 or negatives.dim() != 2 or positives.shape[1] != negatives.shape[1]:
            raise ValueError(f"positives and negatives must be [n, d] with the same d; got "
                             f"{tuple(positives.shape)} and {tuple(negatives.shape)}")
        if len(positives) < 2 or len(negatives) < 2:
            raise ValueError(f"a probe needs at least 2 examples of each class; got {len(positives)} positives "
                             f"and {len(negatives)} negatives")
        x = torch.cat([positives, negatives]).double()
        y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).double()
        mean = negatives.double().mean(0)
        std = x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        sample_weight = torch.where(y == 1, 0.5 / len(positives), 0.5 / len(negatives))
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            losses = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")
            loss = (sample_weight * losses).sum() + l2 * w.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        return cls(mean, std, w.detach(), float(b.detach()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The logit of ``x [..., d]`` (float64)."""
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "weight": self.weight.tolist(),
                "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> LinearProbe:
        return cls(*(torch.tensor(data[k], dtype=torch.float64) for k in ("mean", "std", "weight")), data["bias"])

    def __repr__(self) -> str:
        return f"LinearProbe(d={self.weight.numel()})"


def out_of_fold_scores(positives: torch.Tensor, negatives: torch.Tensor, *, l2: float = 0.1,
                       folds: int = 5) -> torch.Tensor:
    """The probe's score of each negative from a probe fitted without it (``folds``-fold
    cross-fitting over the negatives, every positive in every fold): what a new benign prompt's
    score looks like, for setting the threshold."""
    folds = positive_int("folds", folds)
    if folds < 2 or folds > len(negatives):
        raise ValueError(f"folds must be between 2 and the number of negatives ({len(negatives)}); got {folds}")
    index = torch.arange(len(negatives))
    scores = torch.empty(len(negatives), dtype=torch.float64)
    for fold in range(folds):
        held = index % folds == fold
        scores[held] = LinearProbe.fit(positives, negatives[~held], l2=l2)(negatives[held])
    return scores


__all__ = ["LinearProbe", "out_of_fold_scores"]
