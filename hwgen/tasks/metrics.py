"""The metrics of the tasks (NumPy only): MSE/MAE, cross-entropy, accuracy and macro-F1, precision, recall,
F1 and ROC-AUC."""

from __future__ import annotations

import numpy as np


def mse_mae(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean squared and mean absolute error (float64)."""
    err = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return float(np.mean(err**2)), float(np.mean(np.abs(err)))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of class scores [n, C] against class indices [n] (NumPy, float64)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), np.asarray(y, np.int64)]))


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    pred, y = np.asarray(pred), np.asarray(y)
    if pred.shape != y.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty shapes, not {pred.shape} and {y.shape}")
    return float(np.mean(pred == y))


def macro_f1(pred: np.ndarray, y: np.ndarray, classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from both the labels and
    the predictions is left out (its F1 is undefined)."""
    pred, y = np.asarray(pred), np.asarray(y)
    scores = []
    for c in range(classes):
        tp = int(np.sum((pred == c) & (y == c)))
        fp = int(np.sum((pred == c) & (y != c)))
        fn = int(np.sum((pred != c) & (y == c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def precision_recall_f1(flag: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Binary precision, recall and F1 of the positive class (1 = anomalous); 0 where undefined (0/0)."""
    flag, y = np.asarray(flag).astype(bool), np.asarray(y).astype(bool)
    tp, fp, fn = int(np.sum(flag & y)), int(np.sum(flag & ~y)), int(np.sum(~flag & y))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


def roc_auc(scores: np.ndarray, y: np.ndarray) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count one half), by the rank-sum (Mann-Whitney U) formula with average ranks. None without both classes."""
    s, y = np.asarray(scores, np.float64), np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average rank over each run of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
