"""Reliability diagrams: how often the model is right against how sure it says it is.

Drawn with matplotlib (optional: ``pip install matplotlib``) on a figure without pyplot state,
so it works headless and displays as a notebook cell's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..optional import matplotlib_figure
from .metrics import DEFAULT_BINS, Binning, Predictions, reliability_bins


def plot_reliability(
    predictions: Mapping[str, Predictions],
    path: str | os.PathLike | None = None,
    *,
    n_bins: int = DEFAULT_BINS,
    binning: Binning = "width",
    title: str | None = None,
):
    """Reliability diagrams with confidence histograms, one column per entry of ``predictions``.

    Laid out as Guo et al. (2017), Figure 1: the top row is the histogram of top-1 confidences
    (log-scaled counts, with the mean confidence and the accuracy marked: a gap between the two
    lines is over- or under-confidence on average); the bottom row is the reliability diagram,
    the accuracy of each confidence bin against the diagonal of perfect calibration, with the
    gap to each bin's mean confidence shaded and the ECE and NLL in the corner. Returns the
    matplotlib ``Figure`` (no pyplot state); ``path`` also saves it (PNG, 150 dpi).

    Example:
        >>> import torch
        >>> logits, labels = 3 * torch.randn(500, 10), torch.randint(0, 10, (500,))
        >>> before = Predictions.from_logits(logits, labels)
        >>> after = Predictions.from_logits(logits, labels, temperature=2.0)
        >>> figure = plot_reliability({"T = 1": before, "T = 2": after})   # needs matplotlib
        >>> len(figure.axes)                                  # a histogram and a diagram per column
        4
    """
    Figure, FigureCanvasAgg = matplotlib_figure("plot_reliability()")
    if not predictions:
        raise ValueError("predictions must name at least one set of predictions to plot")
    columns = len(predictions)
    figure = Figure(figsize=(4.2 * columns, 6.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, columns, squeeze=False, sharex=True, height_ratios=[1, 2])
    for column, (label, preds) in enumerate(predictions.items()):
        _plot_histogram(axes[0][column], preds, n_bins, label)
        _plot_diagram(axes[1][column], preds, n_bins, binning, show_ylabel=column == 0)
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path, dpi=150)
    return figure


def _plot_histogram(ax, preds: Predictions, n_bins: int, label: str) -> None:
    edges = torch.linspace(0, 1, n_bins + 1).tolist()
    ax.hist(preds.confidence.numpy(), bins=edges, color="#64748b", edgecolor="white", log=True)
    summary = preds.summary(n_bins)
    ax.axvline(summary["accuracy"], color="#0f766e", linestyle="--", linewidth=1.5, label=f"accuracy {summary['accuracy']:.3f}")
    ax.axvline(summary["confidence"], color="#b91c1c", linestyle=":", linewidth=1.5,
               label=f"mean confidence {summary['confidence']:.3f}")
    ax.set_title(f"{label}\n{len(preds):,} positions", fontsize=10)
    ax.set_ylabel("positions (log)")
    ax.legend(fontsize=7, loc="upper center")


def _plot_diagram(ax, preds: Predictions, n_bins: int, binning: Binning, show_ylabel: bool) -> None:
    bins = reliability_bins(preds.confidence, preds.correct, n_bins, binning)
    filled = bins.count > 0
    lower, upper = bins.lower[filled].numpy(), bins.upper[filled].numpy()
    if binning == "mass":  # a bar spans its bin's confidences; keep zero-width bins visible
        upper = upper.clip(min=lower + 0.004)
    widths = upper - lower
    accuracy, confidence = bins.accuracy[filled].numpy(), bins.confidence[filled].numpy()
    ax.bar(lower, accuracy, width=widths, align="edge", color="#2563eb", edgecolor="#1e3a8a", linewidth=0.6,
           label="accuracy")
    ax.bar(lower, confidence - accuracy, bottom=accuracy, width=widths, align="edge", color="#ef4444", alpha=0.3,
           edgecolor="#b91c1c", hatch="//", linewidth=0.6, label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="#475569", linestyle="--", linewidth=1, label="perfect calibration")
    summary = preds.summary(n_bins)
    ece = summary["ece_width"] if binning == "width" else summary["ece_mass"]
    ax.text(0.96, 0.04, f"ECE ({binning}) {ece:.4f}\nNLL {summary['nll']:.4f}\nBrier {summary['brier']:.4f}",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#cbd5e1"})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("top-1 confidence")
    if show_ylabel:
        ax.set_ylabel(f"accuracy ({n_bins} {'equal-width' if binning == 'width' else 'equal-mass'} bins)")
    ax.legend(fontsize=7, loc="upper left")
