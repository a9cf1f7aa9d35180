"""Training losses of the tasks: MSE on the forecast, cross-entropy on the class scores, MSE between the
window and its reconstruction (anomaly detection)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def task_loss(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of ``task`` for model outputs ``out`` and targets ``y`` (class indices for classify,
    the flattened window for anomaly, the forecast target otherwise)."""
    if task == "classify":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of class scores [n, C] against class indices [n] (NumPy, float64)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), np.asarray(y, np.int64)]))


def validation_loss(model, split) -> float:
    """The loss early stopping watches: the task's loss on the validation split (eval mode)."""
    from hwgen.frontend.train import mse_mae, predict

    pred = predict(model, split.x)
    if model.cfg.task == "classify":
        return cross_entropy(pred, split.y)
    return mse_mae(pred, split.y)[0]
