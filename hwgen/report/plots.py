"""The plots of the build report, from plain arrays to ``data:image/png;base64,...`` URIs.

Matplotlib's Agg canvas is used directly (no pyplot, no global backend switch), so the report renders
headless and embeds every image in the page. PNGs carry no software/date metadata: the same data give the
same bytes.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TRUTH, PRED, ACCENT, GREY = "#1f4e79", "#d9822b", "#c0392b", "#9aa5b1"


def _figure(width: float = 7.0, height: float = 3.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as an inline PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_forecast(truth: npt.ArrayLike, pred: npt.ArrayLike, units: str = "") -> str:
    """Consecutive test windows: the true next value and the deployed model's forecast over time (left), and
    forecast against truth (right)."""
    truth, pred = np.asarray(truth, dtype=float).ravel(), np.asarray(pred, dtype=float).ravel()
    if truth.shape != pred.shape or truth.size == 0:
        raise ValueError(f"truth and predictions must be non-empty and of one length, not {truth.size} "
                         f"and {pred.size}")
    fig = _figure(9.0, 3.2)
    ax, sc = fig.subplots(1, 2, width_ratios=(2.6, 1))
    t = np.arange(truth.size)
    ax.plot(t, truth, color=TRUTH, lw=1.0, label="truth")
    ax.plot(t, pred, color=PRED, lw=1.0, label="deployed integer model")
    ax.set_xlabel("test window")
    ax.set_ylabel(units or "target")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    lo, hi = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    sc.scatter(truth, pred, s=4, color=PRED, alpha=0.5, linewidths=0)
    sc.plot([lo, hi], [lo, hi], color=GREY, lw=0.8)
    sc.set_xlabel("truth")
    sc.set_ylabel("forecast")
    sc.set_aspect("equal", adjustable="datalim")
    return to_data_uri(fig)


def confusion_matrix(truth: npt.ArrayLike, pred: npt.ArrayLike, classes: int | None = None) -> np.ndarray:
    """Counts ``[true class, predicted class]`` of integer labels."""
    truth, pred = np.asarray(truth).astype(np.int64).ravel(), np.asarray(pred).astype(np.int64).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} true labels but {pred.size} predictions")
    if truth.size and min(truth.min(), pred.min()) < 0:
        raise ValueError("class labels must be >= 0")
    n = classes if classes is not None else int(max(truth.max(initial=-1), pred.max(initial=-1))) + 1
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (truth, pred), 1)
    return cm


def plot_confusion(truth: npt.ArrayLike, pred: npt.ArrayLike, labels: Sequence[str] | None = None) -> str:
    """A confusion matrix of integer class labels (rows: truth, columns: prediction), counts in the cells."""
    cm = confusion_matrix(truth, pred, len(labels) if labels else None)
    n = cm.shape[0]
    names = list(labels) if labels else [str(i) for i in range(n)]
    fig = _figure(1.6 + 0.55 * n, 1.3 + 0.5 * n)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > top / 2 else "black")
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return to_data_uri(fig)


def plot_anomaly(scores: npt.ArrayLike, threshold: float, labels: npt.ArrayLike | None = None) -> str:
    """Anomaly scores per test window against the threshold; windows labelled anomalous (``labels`` != 0) in
    red when labels are given."""
    scores = np.asarray(scores, dtype=float).ravel()
    fig = _figure(9.0, 3.0)
    ax = fig.subplots()
    t = np.arange(scores.size)
    if labels is None:
        ax.scatter(t, scores, s=5, color=TRUTH, linewidths=0, label="score")
    else:
        bad = np.asarray(labels).ravel() != 0
        if bad.shape != scores.shape:
            raise ValueError(f"{scores.size} scores but {bad.size} labels")
        ax.scatter(t[~bad], scores[~bad], s=5, color=TRUTH, linewidths=0, label="normal")
        ax.scatter(t[bad], scores[bad], s=9, color=ACCENT, linewidths=0, label="anomalous")
    ax.axhline(float(threshold), color=PRED, lw=1.2, ls="--", label="threshold")
    ax.set_xlabel("test window")
    ax.set_ylabel("anomaly score")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return to_data_uri(fig)


def plot_bars(names: Sequence[str], values: npt.ArrayLike, xlabel: str, limit: float | None = None) -> str:
    """Horizontal bars, one per name, in the given order (top to bottom); a dashed line at ``limit``."""
    values = np.asarray(values, dtype=float)
    fig = _figure(7.0, 0.9 + 0.26 * len(names))
    ax = fig.subplots()
    y = np.arange(len(names))
    colors = [ACCENT if limit is not None and v > limit else TRUTH for v in values]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, list(names), fontsize=8)
    ax.invert_yaxis()
    if limit is not None:
        ax.axvline(limit, color=GREY, ls="--", lw=1)
    ax.set_xlabel(xlabel)
    return to_data_uri(fig)


def plot_pareto(values: npt.ArrayLike, pareto: npt.ArrayLike, names: Sequence[str] = ("objective 0",
                "objective 1")) -> str:
    """Trials by their first two objective values; the Pareto-optimal ones highlighted and joined."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError("a Pareto plot needs two objective values per trial")
    front = np.asarray(pareto, dtype=bool)
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    ax.scatter(v[~front, 0], v[~front, 1], s=14, color=GREY, label="trial")
    order = np.argsort(v[front, 0])
    ax.plot(v[front, 0][order], v[front, 1][order], "-o", color=PRED, ms=5, label="Pareto front")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=8, frameon=False)
    return to_data_uri(fig)
