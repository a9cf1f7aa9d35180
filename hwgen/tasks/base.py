"""The protocol every task (forecast, classify, anomaly) implements, and what the tasks share.

A task is one object (``hwgen.tasks.get(name)``) that the steps, the front end and the report ask instead of
comparing task names. Importing it loads neither torch nor pandas: the training loss imports torch when it
is called, the dataset loaders (``hwgen.data``) load when data is asked for, and the torch steps (training,
export, scoring the torch models) stay in ``hwgen.frontend`` and ``hwgen.steps``, which hand the task their
models' predictions as plain functions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from hwgen.errors import HwgenError

# windows -> model outputs [n, outputs] (scaled units): an FP32 or fake-quant model on the host
Predictor = Callable[[np.ndarray], np.ndarray]
MODELS = ("fp32", "fake_quant", "integer")  # the models an evaluation scores, in the order tables list them


def fmt(value: Any, spec: str = "") -> str:
    """A value for the terminal summary: "-" when missing."""
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def integer_outputs(graph, x: np.ndarray) -> np.ndarray:
    """The deployed integer model's outputs [n, outputs] for real (scaled) windows: inputs quantized with the
    graph's input scale, then the golden interpreter (4,096 windows at a time)."""
    return integer_values(graph, x, graph.output_name)


def integer_values(graph, x: np.ndarray, name: str) -> np.ndarray:
    """The integers of graph value ``name`` [n, ...] for real (scaled) windows, as :func:`integer_outputs`."""
    from hwgen.golden import run as golden_run
    from hwgen.host.quantize import quantize_input

    xi = quantize_input(x, graph.meta["input_scale"], graph.input_type.dtype.bits)
    return np.concatenate([golden_run(graph, xi[i:i + 4096], return_all=True)[name].reshape(len(xi[i:i + 4096]), -1)
                           for i in range(0, len(xi), 4096)])


class Task:
    """One task: its data, model outputs, training loss, integer head, metrics and what reports print.

    Subclasses set the class attributes and override what differs; the defaults here are the generic ones.
    """

    name: str = ""
    default_dataset: str | None = None  # the built-in dataset `hwgen train --task NAME` uses by default
    default_epochs: tuple[int, int] | None = None  # FP32 and QAT epoch maxima; None: TrainOptions' defaults
    default_horizon: int | None = None  # steps after the window a model scores; None: the task has none
    scores_threshold = False  # the graph flags scores above an integer threshold calibrated after QAT
    loss_name = "loss"  # what the training summary calls the validation loss
    post_training_quantization = False  # `hwgen quantize` (hwgen.frontend.ptq) takes this task's models

    # ---- data -------------------------------------------------------------------------------------------
    def check_train_args(self, args) -> None:
        """Reject `hwgen train` flags this task does not take (HwgenError names the flag)."""
        if args.init_from:
            raise HwgenError("--init-from works with --task forecast only")
        if args.features:
            raise HwgenError("--features works with --task forecast only (classify/anomaly CSVs use every "
                             "numeric column besides the label)")
        if not 0.5 <= args.threshold_quantile <= 1:
            raise HwgenError(f"threshold quantile must lie in [0.5, 1], not {args.threshold_quantile}")

    def load_data(self, dataset: str | None, csv: str | None, target: str | None, window: int | None,
                  seed: int = 0, horizon: int = 0, features: list[str] | None = None):
        """The dataset of a training run: built in by name, or a user CSV."""
        raise NotImplementedError

    def describe_data(self, data, dataset: str | None, csv: str | None, seed: int) -> dict[str, Any]:
        """What a checkpoint records about its data (the descriptor ``reload_data`` takes)."""
        from hwgen.data.tasks import describe

        return describe(data, dataset, csv, seed)

    def reload_data(self, descriptor: dict[str, Any]):
        """The dataset a checkpoint (or graph) was trained on, from its descriptor; HwgenError when the data
        changed since."""
        from hwgen.data.tasks import check_unchanged

        d = descriptor
        data = self.load_data(None if d.get("csv") else d["name"], d.get("csv"), d.get("target") or None,
                              int(d.get("requested_window") or d["window"]), int(d.get("seed", 0)),
                              int(d.get("horizon") or 0))
        return check_unchanged(data, d)

    def data_line(self, data) -> str:
        """The line `hwgen train` prints about the data it loaded."""
        return (f"data: {data.name}: {len(data.train.x)}/{len(data.val.x)}/{len(data.test.x)} windows "
                f"(train/val/test) of {data.window} x {len(data.features)}")

    # ---- model and training -----------------------------------------------------------------------------
    def outputs(self, data) -> int:
        """The model's output count for ``data``."""
        raise NotImplementedError

    def model_config(self, cfg, data):
        """``cfg`` (a ModelConfig) made to fit ``data`` and this task."""
        return replace(cfg, task=self.name, window=data.window, features=len(data.features),
                       outputs=self.outputs(data), horizon=data.horizon)

    def config_checks(self, cfg) -> list[tuple[bool, str]]:
        """(condition, message) pairs a ModelConfig of this task must satisfy."""
        return [(cfg.horizon == 0, "a horizon is an anomaly-detection setting")]

    def train_options(self, opts, n_train: int):
        """The TrainOptions this task trains with on ``n_train`` training windows."""
        return opts

    def train_record(self, opts) -> dict[str, Any]:
        """What the checkpoint's training record notes about this task's run."""
        return {"task": self.name, "batch": opts.batch}

    def loss(self, out, y):
        """The training loss (torch) of model outputs ``out`` against targets ``y``: MSE by default."""
        import torch.nn.functional as F

        return F.mse_loss(out, y)

    def validation_loss(self, pred: np.ndarray, y: np.ndarray) -> float:
        """The loss early stopping watches, of validation predictions ``pred`` (NumPy): MSE by default."""
        from hwgen.tasks.metrics import mse_mae

        return mse_mae(pred, y)[0]

    # ---- the integer graph ------------------------------------------------------------------------------
    def add_head(self, b, model, out: str, s_in: np.ndarray, class_scores: bool = True
                 ) -> tuple[str, dict[str, Any]]:
        """Append the task's head op after the model's output layer ``out`` to the graph being built (``b``, a
        GraphBuilder); returns (output value, graph metadata). By default there is no head."""
        if not class_scores:
            article = "an" if self.name[:1] in "aeiou" else "a"
            raise HwgenError(f"returning the class index alone applies to classifiers, not to {article} "
                             f"{self.name} model")
        return out, {}

    # ---- evaluation and reports -------------------------------------------------------------------------
    def evaluate(self, data, split: str, predictors: dict[str, Predictor], graph, cfg,
                 meta: dict[str, Any], model_path: str) -> dict[str, Any]:
        """Score a checkpoint on ``split``: the host models (``predictors``: "fp32" and, when quantized,
        "fake_quant") and the deployed integer ``graph`` (None for an FP32 checkpoint)."""
        raise NotImplementedError

    def format_eval(self, result: dict[str, Any]) -> str:
        """The table `hwgen eval` prints for ``result``."""
        raise NotImplementedError

    def summary_line(self, acc: dict[str, Any]) -> str:
        """The terminal summary's accuracy line from report.json's ``accuracy`` section."""
        raise NotImplementedError

    def predictions(self, graph, data, n: int) -> dict[str, Any]:
        """The deployed integer model on the first ``n`` test windows of ``data``: the arrays and scores the
        report's plot of this task needs."""
        raise NotImplementedError
