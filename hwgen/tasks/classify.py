"""Classification: the model's outputs are class scores, trained with cross-entropy; the graph's ``argmax``
head returns the class index (then the scores). Scored by accuracy and macro-F1."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from hwgen.errors import HwgenError
from hwgen.tasks.base import Task, fmt, integer_outputs
from hwgen.tasks.metrics import accuracy, cross_entropy, macro_f1


def _metrics(pred: np.ndarray, y: np.ndarray, classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, classes)}


class Classify(Task):
    name = "classify"
    default_dataset = "basicmotions"
    default_epochs = (300, 100)

    def load_data(self, dataset, csv, target, window, seed=0, horizon=0, features=None):
        from hwgen.data.tasks import load_classify_data

        if horizon:
            raise HwgenError(f"a horizon is an anomaly-detection setting, not one of --task {self.name}")
        return load_classify_data(dataset, csv, target, window, seed)

    def data_line(self, data) -> str:
        return super().data_line(data) + f", {len(data.classes)} classes"

    def outputs(self, data) -> int:
        return len(data.classes)

    def config_checks(self, cfg):
        return [(cfg.outputs >= 2, f"a classifier needs >= 2 classes, not {cfg.outputs}"), *super().config_checks(cfg)]

    def train_options(self, opts, n_train):
        """Small classification sets (tens of series) need small batches and more patience to converge."""
        return replace(opts, batch=min(opts.batch, max(4, n_train // 4)), patience=max(opts.patience, 40))

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out, y)

    def validation_loss(self, pred, y):
        return cross_entropy(pred, y)

    def add_head(self, b, model, out, s_in, class_scores=True):
        """``argmax`` of the C class scores, output [index, score_0 .. score_C-1] (``class_scores``) or
        [index]."""
        node = b.argmax("class", out, model.q_head.dtype, scores=class_scores)
        return node, {"task": self.name, "classes": model.cfg.outputs, "class_scores": bool(class_scores)}

    def evaluate(self, data, split, predictors, graph, cfg, meta, model_path):
        part = getattr(data, split)
        result: dict[str, Any] = {"model": str(model_path), "split": split, "windows": len(part.x),
                                  "task": cfg.task, "dataset": data.name, "classes": list(data.classes)}
        preds = {}
        for key, predict in predictors.items():
            preds[key] = np.argmax(predict(part.x), axis=1)
            result[key] = _metrics(preds[key], part.labels, cfg.outputs)
        if graph is not None:
            preds["integer"] = integer_outputs(graph, part.x)[:, 0]
            result["integer"] = _metrics(preds["integer"], part.labels, cfg.outputs)
            result["fake_quant_vs_integer"] = {"fraction_differ": float(np.mean(preds["integer"] != preds["fake_quant"]))}
        return result

    def format_eval(self, result):
        lines = [f"{result['model']} ({result['task']}, {result['dataset']}) on the {result['split']} split "
                 f"({result['windows']} windows)", f"{'model':<12}{'accuracy':>10}{'macro-F1':>10}"]
        for key in ("fp32", "fake_quant", "integer"):
            if key in result:
                m = result[key]
                lines.append(f"{key:<12}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}")
        return "\n".join(lines)

    def summary_line(self, acc):
        fp32, integer = acc.get("fp32") or {}, acc.get("integer") or {}
        return (f"- accuracy on {acc.get('windows')} test windows (accuracy / macro-F1): FP32 "
                f"{fmt(fp32.get('accuracy'), '.3f')} / {fmt(fp32.get('macro_f1'), '.3f')}, deployed integer "
                f"{fmt(integer.get('accuracy'), '.3f')} / {fmt(integer.get('macro_f1'), '.3f')}")

    def predictions(self, graph, data, n):
        """``truth``/``pred`` class indices, their ``accuracy`` and the class ``labels``."""
        # the graph returns [class, scores...]; the labels are the truth
        truth = np.asarray(data.test.labels[:n]).astype(np.int64)
        pred = integer_outputs(graph, data.test.x[:n])[:, 0].astype(np.int64)
        return {"truth": truth, "pred": pred, "accuracy": float(np.mean(truth == pred)),
                "labels": list(getattr(data, "classes", ()) or ()) or None}
