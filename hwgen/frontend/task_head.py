"""The integer form of the task heads after the model's output layer: a classifier's argmax and an anomaly
detector's reconstruction score. Forecasting models have no head op (the output layer is the output)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.types import IntType

SCORE_TYPE = IntType(16)  # [score, flag] of an anomaly model; the score saturates at qmax
SCORE_M_BITS = 16  # the larger of the score multipliers mx, mr is normalised into [2**15, 2**16)
SCORE_TRAIN_MAX = 1 << 11  # the largest training score lands here: 16x headroom before saturation


def score_shift(ratios: np.ndarray) -> int:
    """The one shift of the score's multipliers: the largest ratio gets SCORE_M_BITS bits."""
    big = float(np.max(np.abs(ratios)))
    if not math.isfinite(big) or big <= 0:
        raise HwgenError(f"anomaly score ratios must be positive and finite, not {big!r}")
    return int(min(max((SCORE_M_BITS - 1) - math.floor(math.log2(big)), 0), 62))


def add_task_head(b: GraphBuilder, model, out: str, s_in: np.ndarray,
                  class_scores: bool = True) -> tuple[str, dict[str, Any]]:
    """Append the task's head op to the graph being built; returns (output value, graph metadata).

    classify: ``argmax`` of the C class scores, output [index, score_0 .. score_C-1] (``class_scores``) or
    [index].
    anomaly: ``anomaly_score`` of the input window x (scales s_in per feature) and the reconstruction
    (scale s_rec): score = round(sum |x*s_in - rec*s_rec| / score_scale), flag = score > threshold, with
    x*mx[f] - rec*mr[f] the difference at the common scale score_scale / 2**shift (dyadic multipliers). With
    a horizon H the model forecasts the H input steps after its window, and those are compared.
    """
    cfg = model.cfg
    if not class_scores and cfg.task != "classify":
        article = "an" if cfg.task == "anomaly" else "a"
        raise HwgenError(f"returning the class index alone applies to classifiers, not to {article} {cfg.task} model")
    if cfg.task == "forecast":
        return out, {}
    s_head = float(model.q_head.effective_scale().reshape(-1)[0])
    if cfg.task == "classify":
        node = b.argmax("class", out, model.q_head.dtype, scores=class_scores)
        return node, {"task": "classify", "classes": cfg.outputs, "class_scores": bool(class_scores)}
    s_score = float(model.score_scale)
    if not s_score > 0:
        raise HwgenError("the anomaly model has no score scale: it was not finished by 'hwgen train --task anomaly'")
    ratios = np.append(np.asarray(s_in, np.float64), s_head) / s_score
    shift = score_shift(ratios)
    mx = np.floor(ratios[:-1] * 2.0**shift + 0.5).astype(np.int64)
    mr = np.full(cfg.features, int(np.floor(ratios[-1] * 2.0**shift + 0.5)), np.int64)
    threshold = int(model.score_threshold)
    calibrated = threshold >= 0
    if not calibrated:  # while training: every window normal until the threshold is chosen
        threshold = SCORE_TYPE.qmax
    offset = cfg.window * cfg.features if cfg.horizon else 0  # score the steps after the window
    node = b.anomaly_score("anomaly", b.input_name, out, mx, mr, shift, threshold, SCORE_TYPE, offset=offset)
    return node, {"task": "anomaly", "score_scale": s_score, "threshold": threshold,
                  "threshold_calibrated": calibrated}
