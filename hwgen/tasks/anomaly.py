"""Anomaly detection: the model reconstructs its window (or forecasts the ``horizon`` steps after it); the
graph's ``anomaly_score`` head returns [score, flag], score = the summed absolute error in integers, flag =
score > the threshold stored in the graph. Scored by precision, recall, F1 and ROC-AUC.

FP32 and fake-quant models are scored the same way on the host for comparison; their thresholds are the same
quantile of their own scores of the normal (training and validation) windows.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType
from hwgen.tasks.base import Task, fmt, integer_outputs, integer_values
from hwgen.tasks.metrics import precision_recall_f1, roc_auc

SCORE_TYPE = IntType(16)  # [score, flag] of an anomaly model; the score saturates at qmax
SCORE_M_BITS = 16  # the larger of the score multipliers mx, mr is normalised into [2**15, 2**16)
SCORE_TRAIN_MAX = 1 << 11  # the largest training score lands here: 16x headroom before saturation
# The anomaly threshold: this quantile of the scores of the normal windows (training and validation). 1.0,
# their largest score, flags no normal window seen; anomalies are rare, and each false alarm costs precision.
THRESHOLD_QUANTILE = 1.0


def score_shift(ratios: np.ndarray) -> int:
    """The one shift of the score's multipliers: the largest ratio gets SCORE_M_BITS bits."""
    big = float(np.max(np.abs(ratios)))
    if not math.isfinite(big) or big <= 0:
        raise HwgenError(f"anomaly score ratios must be positive and finite, not {big!r}")
    return int(min(max((SCORE_M_BITS - 1) - math.floor(math.log2(big)), 0), 62))


def host_scores(pred: np.ndarray, x: np.ndarray, scored_steps: int) -> np.ndarray:
    """Host-side anomaly scores from a model's predictions ``pred`` of windows ``x``: sum over the scored
    steps of |x - prediction| (scaled units): the window and its reconstruction, or the steps after the
    window and their forecast."""
    scored = x[:, x.shape[1] - scored_steps:]
    return np.abs(pred - scored.reshape(len(x), -1).astype(np.float64)).sum(axis=1)


def normal_windows(data) -> np.ndarray:
    """The windows an anomaly threshold is set on: training and validation, normal by construction."""
    return np.concatenate([data.train.x, data.val.x])


def integer_threshold(scores: np.ndarray, quantile: float) -> int:
    """The integer threshold: the ``quantile`` of the deployed integer ``scores`` of the normal windows,
    rounded up (at most the score's largest value)."""
    return min(int(math.ceil(float(np.quantile(scores, quantile)))), SCORE_TYPE.qmax)


def _metrics(scores: np.ndarray, flag: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    return {**precision_recall_f1(flag, y), "roc_auc": roc_auc(scores, y), "threshold": float(threshold)}


class Anomaly(Task):
    # kdd135, not mitdb: mitdb's labelled anomaly is a change of a whole heartbeat (~300 steps), which no
    # window of the sizes the XC7S15 holds sees (ROC-AUC about 0.5 at window 32, see models/README.md)
    name = "anomaly"
    default_dataset = "kdd135"
    default_epochs = (60, 20)
    default_horizon = 4  # forecast 4 steps after the window and score them
    scores_threshold = True

    def load_data(self, dataset, csv, target, window, seed=0, horizon=0, features=None):
        from hwgen.data.tasks import load_anomaly_data

        return load_anomaly_data(dataset, csv, target, window, horizon)

    def data_line(self, data) -> str:
        extra = f", {int(data.test.labels.sum())} anomalous test windows"
        if data.horizon:
            extra = f", the next {data.horizon} steps forecast and scored" + extra
        return super().data_line(data) + extra

    def outputs(self, data) -> int:
        return (data.horizon or data.window) * len(data.features)

    def config_checks(self, cfg):
        return [(cfg.outputs == cfg.scored_steps * cfg.features,
                 f"an anomaly model predicts the {cfg.scored_steps} scored steps: outputs must be "
                 f"{cfg.scored_steps * cfg.features}, not {cfg.outputs}")]

    def train_options(self, opts, n_train):
        """Anomaly sets (a few thousand windows) need at least ~30 steps per epoch."""
        return replace(opts, batch=min(opts.batch, max(16, n_train // 32)))

    def add_head(self, b, model, out, s_in, class_scores=True):
        """``anomaly_score`` of the input window x (scales s_in per feature) and the reconstruction (scale
        s_rec): score = round(sum |x*s_in - rec*s_rec| / score_scale), flag = score > threshold, with
        x*mx[f] - rec*mr[f] the difference at the common scale score_scale / 2**shift (dyadic multipliers).
        With a horizon H the model forecasts the H input steps after its window, and those are compared."""
        super().add_head(b, model, out, s_in, class_scores)  # rejects class_scores False
        cfg = model.cfg
        s_head = float(model.q_head.effective_scale().reshape(-1)[0])
        s_score = float(model.score_scale)
        if not s_score > 0:
            raise HwgenError("the anomaly model has no score scale: it was not finished by 'hwgen train --task "
                             "anomaly'")
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
        return node, {"task": self.name, "score_scale": s_score, "threshold": threshold,
                      "threshold_calibrated": calibrated}

    def evaluate(self, data, split, predictors, graph, cfg, meta, model_path):
        part = getattr(data, split)
        result: dict[str, Any] = {"model": str(model_path), "split": split, "windows": len(part.x),
                                  "task": cfg.task, "dataset": data.name}
        quantile = float(meta["train"].get("threshold_quantile", THRESHOLD_QUANTILE))
        result["anomalous_windows"] = int(part.labels.sum())
        normal = normal_windows(data)
        for key, predict in predictors.items():
            normal_scores = host_scores(predict(normal), normal, cfg.scored_steps)
            threshold = float(np.quantile(normal_scores, quantile))
            scores = host_scores(predict(part.x), part.x, cfg.scored_steps)
            result[key] = _metrics(scores, scores > threshold, part.labels, threshold)
        if graph is not None:
            out = integer_outputs(graph, part.x)
            result["integer"] = _metrics(out[:, 0], out[:, 1], part.labels, graph.meta["threshold"])
            result["integer"]["saturated"] = int(np.sum(out[:, 0] == SCORE_TYPE.qmax))
            if "fake_quant" in predictors:  # the quantized forward's forecast against the graph's (before the score)
                head = integer_values(graph, part.x, "head")
                fq = np.floor(predictors["fake_quant"](part.x) / graph.meta["output_scale"] + 0.5)
                diff = np.abs(fq.reshape(head.shape) - head)
                result["fake_quant_vs_integer"] = {"fraction_differ": float(np.mean(diff > 0)),
                                                   "max_lsb": int(diff.max())}
        return result

    def format_eval(self, result):
        lines = [f"{result['model']} ({result['task']}, {result['dataset']}) on the {result['split']} split "
                 f"({result['windows']} windows)", f"{result['anomalous_windows']} anomalous windows",
                 f"{'model':<12}{'precision':>10}{'recall':>10}{'F1':>10}{'ROC-AUC':>10}{'threshold':>12}"]
        for key in ("fp32", "fake_quant", "integer"):
            if key in result:
                m = result[key]
                auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
                lines.append(f"{key:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{auc:>10}"
                             f"{m['threshold']:>12.4g}")
        return "\n".join(lines)

    def summary_line(self, acc):
        fp32, integer = acc.get("fp32") or {}, acc.get("integer") or {}
        return (f"- anomaly detection on {acc.get('windows')} test windows (precision / recall / F1, ROC-AUC): "
                f"FP32 {fmt(fp32.get('precision'), '.3f')} / {fmt(fp32.get('recall'), '.3f')} / "
                f"{fmt(fp32.get('f1'), '.3f')}, {fmt(fp32.get('roc_auc'), '.3f')}; deployed integer "
                f"{fmt(integer.get('precision'), '.3f')} / {fmt(integer.get('recall'), '.3f')} / "
                f"{fmt(integer.get('f1'), '.3f')}, {fmt(integer.get('roc_auc'), '.3f')}")

    def predictions(self, graph, data, n):
        """The integer ``scores``, the graph's ``threshold``, how many windows are ``flagged`` and the
        ``truth`` labels."""
        if "threshold" not in graph.meta:
            raise HwgenError("the graph metadata holds no anomaly threshold")
        ints = integer_outputs(graph, data.test.x[:n])
        truth = np.asarray(data.test.labels[:n]).astype(np.int64)
        return {"scores": ints[:, 0], "threshold": graph.meta["threshold"], "flagged": int(np.sum(ints[:, 1] != 0)),
                "truth": truth}
