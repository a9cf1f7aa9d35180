"""Classification and anomaly detection: training, threshold calibration, evaluation and their metrics.

The deployed model is the integer graph (golden interpreter): a classifier's graph returns the class index
(then the scores), an anomaly detector's graph returns [score, flag] with the threshold stored in the graph.
FP32 and fake-quant models are scored the same way on the host for comparison; their anomaly thresholds are
the same quantile of their own scores of the normal (training and validation) windows.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.data.tasks import TaskDataset, describe, from_descriptor
from hwgen.errors import HwgenError
from hwgen.frontend.checkpoint import save_checkpoint
from hwgen.frontend.export import export_model, quantize_input
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.task_head import SCORE_TRAIN_MAX, SCORE_TYPE
from hwgen.frontend.train import TrainOptions, predict, train_fp32, train_qat
from hwgen.golden import run as golden_run

# The anomaly threshold: this quantile of the scores of the normal windows (training and validation). 1.0,
# their largest score, flags no normal window seen; anomalies are rare, and each false alarm costs precision.
THRESHOLD_QUANTILE = 1.0


# ---- metrics (NumPy only) -----------------------------------------------------------------------------------
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


# ---- model outputs ------------------------------------------------------------------------------------------
def golden_outputs(graph, x: np.ndarray) -> np.ndarray:
    """The deployed integer model's outputs [n, out] for real (scaled) windows."""
    xi = quantize_input(x, graph.meta["input_scale"], graph.input_type.dtype.bits)
    return np.concatenate([golden_run(graph, xi[i:i + 4096]).reshape(len(xi[i:i + 4096]), -1)
                           for i in range(0, len(xi), 4096)])


def real_scores(model: TimeSeriesTransformer, x: np.ndarray, double: bool = False) -> np.ndarray:
    """Host-side anomaly scores: sum over the scored steps of |x - prediction| (scaled units): the window
    and its reconstruction, or the steps after the window and their forecast."""
    pred = predict(model, x, double=double)
    scored = x[:, x.shape[1] - model.cfg.scored_steps:]
    return np.abs(pred - scored.reshape(len(x), -1).astype(np.float64)).sum(axis=1)


def normal_windows(data: TaskDataset) -> np.ndarray:
    """The windows an anomaly threshold is set on: training and validation, normal by construction."""
    return np.concatenate([data.train.x, data.val.x])


def calibrate_anomaly(model: TimeSeriesTransformer, data: TaskDataset, quantile: float) -> int:
    """Set a QAT anomaly model's score unit (the largest fake-quant training score -> SCORE_TRAIN_MAX) and
    its integer threshold (the ``quantile`` of the deployed integer scores of the normal windows, rounded
    up). Returns the threshold."""
    fq = real_scores(model, data.train.x, double=True)
    model.score_scale.fill_(max(float(fq.max()), 1e-6) / SCORE_TRAIN_MAX)
    model.score_threshold.fill_(-1)
    graph = export_model(model, {})
    scores = golden_outputs(graph, normal_windows(data))[:, 0]
    threshold = min(int(math.ceil(float(np.quantile(scores, quantile)))), SCORE_TYPE.qmax)
    model.score_threshold.fill_(threshold)
    return threshold


# ---- training -----------------------------------------------------------------------------------------------
def task_options(task: str, opts: TrainOptions, n_train: int) -> TrainOptions:
    """Small classification sets (tens of series) need small batches and more patience to converge; anomaly
    sets (a few thousand windows) at least ~30 steps per epoch."""
    if task == "classify":
        return replace(opts, batch=min(opts.batch, max(4, n_train // 4)), patience=max(opts.patience, 40))
    if task == "anomaly":
        return replace(opts, batch=min(opts.batch, max(16, n_train // 32)))
    return opts


def train_task(data: TaskDataset, cfg: ModelConfig, opts: TrainOptions, out: str, bits: int | None,
               command: str, dataset: str | None, csv: str | None, act_bits: int | None = None,
               quantile: float = THRESHOLD_QUANTILE) -> dict[str, Any]:
    """Train a classifier or anomaly detector (FP32, then QAT at ``bits`` when given) and save it."""
    outputs = len(data.classes) if data.task == "classify" else (data.horizon or data.window) * len(data.features)
    cfg = replace(cfg, task=data.task, window=data.window, features=len(data.features), outputs=outputs,
                  horizon=data.horizon).validate()
    if not 0.5 <= quantile <= 1:
        raise HwgenError(f"threshold quantile must lie in [0.5, 1], not {quantile}")
    opts = task_options(data.task, opts, len(data.train.x))
    start = time.perf_counter()
    fp32, fp32_info = train_fp32(data, cfg, opts)
    info: dict[str, Any] = {"command": command, "seed": opts.seed, "task": data.task, "batch": opts.batch,
                            "fp32": {k: v for k, v in fp32_info.items() if k != "history"}}
    model = fp32
    if bits is not None:
        qcfg = replace(cfg, quantized=True, bits_w=bits, bits_a=act_bits or bits)
        model, qinfo = train_qat(data, qcfg, fp32, opts)
        info["qat"] = {k: v for k, v in qinfo.items() if k != "history"}
        if data.task == "anomaly":
            info["threshold"] = calibrate_anomaly(model, data, quantile)
    if data.task == "anomaly":
        info["threshold_quantile"] = quantile
    info["seconds"] = time.perf_counter() - start
    extra = {"fp32_state_dict": fp32.state_dict()} if bits is not None else {}
    save_checkpoint(out, model, describe(data, dataset, csv, opts.seed), info, extra)
    return info


# ---- evaluation ---------------------------------------------------------------------------------------------
def _classify_metrics(pred: np.ndarray, y: np.ndarray, classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, classes)}


def _anomaly_metrics(scores: np.ndarray, flag: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    return {**precision_recall_f1(flag, y), "roc_auc": roc_auc(scores, y), "threshold": float(threshold)}


def evaluate_task(model: TimeSeriesTransformer, meta: dict[str, Any], model_path: str, split: str) -> dict[str, Any]:
    """Score a classify/anomaly checkpoint on a split: FP32, fake-quant and the deployed integer model."""
    data = from_descriptor(meta["data"])
    part = getattr(data, split)
    cfg = model.cfg
    result: dict[str, Any] = {"model": str(model_path), "split": split, "windows": len(part.x), "task": cfg.task,
                              "dataset": data.name}
    models = {"fp32": model}
    if cfg.quantized:
        fp32 = TimeSeriesTransformer(replace(cfg, quantized=False))
        fp32.load_state_dict(meta["fp32_state_dict"], strict=False)
        models = {"fp32": fp32, "fake_quant": model}
    graph = export_model(model, {"model": Path(model_path).name, "data": meta["data"]}) if cfg.quantized else None
    if cfg.task == "classify":
        result["classes"] = list(data.classes)
        preds = {}
        for key, m in models.items():
            preds[key] = np.argmax(predict(m, part.x, double=key == "fake_quant"), axis=1)
            result[key] = _classify_metrics(preds[key], part.labels, cfg.outputs)
        if graph is not None:
            preds["integer"] = golden_outputs(graph, part.x)[:, 0]
            result["integer"] = _classify_metrics(preds["integer"], part.labels, cfg.outputs)
            result["fake_quant_vs_integer"] = {"fraction_differ": float(np.mean(preds["integer"] != preds["fake_quant"]))}
        return result
    quantile = float(meta["train"].get("threshold_quantile", THRESHOLD_QUANTILE))
    result["anomalous_windows"] = int(part.labels.sum())
    for key, m in models.items():
        normal_scores = real_scores(m, normal_windows(data), double=key == "fake_quant")
        threshold = float(np.quantile(normal_scores, quantile))
        scores = real_scores(m, part.x, double=key == "fake_quant")
        result[key] = _anomaly_metrics(scores, scores > threshold, part.labels, threshold)
    if graph is not None:
        out = golden_outputs(graph, part.x)
        result["integer"] = _anomaly_metrics(out[:, 0], out[:, 1], part.labels, graph.meta["threshold"])
        result["integer"]["saturated"] = int(np.sum(out[:, 0] == SCORE_TYPE.qmax))
    return result


def format_eval(result: dict[str, Any]) -> str:
    """The table `hwgen eval` prints for a classify/anomaly result."""
    lines = [f"{result['model']} ({result['task']}, {result['dataset']}) on the {result['split']} split "
             f"({result['windows']} windows)"]
    if result["task"] == "classify":
        lines.append(f"{'model':<12}{'accuracy':>10}{'macro-F1':>10}")
        for key in ("fp32", "fake_quant", "integer"):
            if key in result:
                m = result[key]
                lines.append(f"{key:<12}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}")
        return "\n".join(lines)
    lines.append(f"{result['anomalous_windows']} anomalous windows")
    lines.append(f"{'model':<12}{'precision':>10}{'recall':>10}{'F1':>10}{'ROC-AUC':>10}{'threshold':>12}")
    for key in ("fp32", "fake_quant", "integer"):
        if key in result:
            m = result[key]
            auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
            lines.append(f"{key:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{auc:>10}"
                         f"{m['threshold']:>12.4g}")
    return "\n".join(lines)


# ---- command line -------------------------------------------------------------------------------------------
# kdd135, not mitdb: mitdb's labelled anomaly is a change of a whole heartbeat (~300 steps), which no window of
# the sizes the XC7S15 holds sees (ROC-AUC about 0.5 at window 32, see models/README.md)
DEFAULT_DATASET = {"classify": "basicmotions", "anomaly": "kdd135"}
DEFAULT_HORIZON = 4  # anomaly: forecast 4 steps after the window and score them
DEFAULT_EPOCHS = {"classify": (300, 100), "anomaly": (60, 20)}  # FP32, QAT maxima (early stopping)


def cli_train(args, oscillation: dict | None = None) -> int:
    """`hwgen train --task classify|anomaly ...` (arguments as parsed by hwgen.steps.cli; ``oscillation``: the
    TrainOptions fields of the QAT oscillation flags)."""
    import shlex
    import sys

    from hwgen.data.tasks import load_task_data
    from hwgen.progress import enabled as progress_enabled

    if args.init_from:
        raise HwgenError("--init-from works with --task forecast only")
    if args.features:
        raise HwgenError("--features works with --task forecast only (classify/anomaly CSVs use every numeric "
                         "column besides the label)")
    dataset = None if args.csv else (args.dataset or DEFAULT_DATASET[args.task])
    horizon = DEFAULT_HORIZON if args.horizon is None else args.horizon
    data = load_task_data(args.task, dataset, args.csv, args.target, args.window, args.seed,
                          horizon if args.task == "anomaly" else 0)
    cfg = ModelConfig(features=len(data.features), window=data.window, d_model=args.d_model, heads=args.heads,
                      layers=args.layers, ffn=args.ffn, norm=args.norm, bits_res=args.res_bits,
                      precision=args.precision or "", peg_groups=args.peg_groups,
                      peg_permute=not args.no_peg_permute)
    epochs, qat_epochs = DEFAULT_EPOCHS[args.task]
    defaults = TrainOptions()
    opts = TrainOptions(epochs=args.epochs or epochs, qat_epochs=args.qat_epochs or qat_epochs, seed=args.seed,
                        lr=args.lr or defaults.lr, progress=progress_enabled(), **(oscillation or {}))
    extra = f", {len(data.classes)} classes" if data.task == "classify" else \
        f", {int(data.test.labels.sum())} anomalous test windows"
    if data.horizon:
        extra = f", the next {data.horizon} steps forecast and scored" + extra
    print(f"data: {data.name}: {len(data.train.x)}/{len(data.val.x)}/{len(data.test.x)} windows (train/val/test) "
          f"of {data.window} x {len(data.features)}{extra}", file=sys.stderr)
    command = "hwgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info = train_task(data, cfg, opts, args.out, args.bits, command, dataset, args.csv, act_bits=args.act_bits,
                      quantile=args.threshold_quantile)
    parts = [f"fp32 val loss {info['fp32']['val_mse']:.4f}"]
    if "qat" in info:
        parts.append(f"qat val loss {info['qat']['val_mse']:.4f}")
    if "threshold" in info:
        parts.append(f"integer threshold {info['threshold']}")
    print(f"saved {args.out} ({', '.join(parts)}, {info['seconds']:.0f} s)")
    return 0
