"""Forecasting: the model's outputs are the target's next value(s), scored by MSE/MAE; no head op (the
output layer is the output)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from hwgen.tasks.base import Task, fmt, integer_outputs
from hwgen.tasks.metrics import mse_mae


def golden_predict(graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The deployed integer model on real windows: quantize inputs, run the golden interpreter, dequantize.

    Returns (integer outputs [n, outputs], real outputs [n, outputs])."""
    yi = integer_outputs(graph, x)
    return yi, yi * graph.meta["output_scale"]


def _metrics(data, pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    mse, mae = mse_mae(pred, y)
    return {"mse": mse, "mae": mae, "mse_units": data.mse_to_units(mse), "mae_units": data.mae_to_units(mae)}


class Forecast(Task):
    name = "forecast"
    default_dataset = "pm25"
    loss_name = "mse"
    post_training_quantization = True

    def check_train_args(self, args) -> None:
        """Every `hwgen train` flag applies to forecasting."""

    def load_data(self, dataset, csv, target, window, seed=0, horizon=0, features=None):
        from hwgen.data.timeseries import load_forecast_data

        return load_forecast_data(dataset, csv, target, features, window or 24)

    def describe_data(self, data, dataset, csv, seed):
        from hwgen.data.timeseries import describe

        return describe(data, csv)

    def reload_data(self, descriptor):
        from hwgen.data.timeseries import from_descriptor

        return from_descriptor(descriptor)

    def data_line(self, data) -> str:
        return (f"data: {data.name}: {len(data.train.x)}/{len(data.val.x)}/{len(data.test.x)} windows "
                f"(train/val/test), {sum(data.dropped.values())} dropped for missing values")

    def model_config(self, cfg, data):
        return replace(cfg, window=data.window, features=len(data.features))

    def train_record(self, opts) -> dict[str, Any]:
        return {}

    def evaluate(self, data, split, predictors, graph, cfg, meta, model_path):
        part = getattr(data, split)
        result: dict[str, Any] = {"model": str(model_path), "split": split, "windows": len(part.x)}
        result["fp32"] = _metrics(data, predictors["fp32"](part.x), part.y)
        if graph is None:
            return result
        fq = predictors["fake_quant"](part.x)
        result["fake_quant"] = _metrics(data, fq, part.y)
        yi, yr = golden_predict(graph, part.x)
        result["integer"] = _metrics(data, yr, part.y)
        fq_int = np.floor(fq / graph.meta["output_scale"] + 0.5)
        diff = np.abs(fq_int - yi)
        result["fake_quant_vs_integer"] = {"fraction_differ": float(np.mean(diff > 0)), "max_lsb": int(diff.max())}
        if "surrogate" in predictors:  # the float fake-quant computation QAT's gradients follow
            sd = np.abs(np.floor(predictors["surrogate"](part.x) / graph.meta["output_scale"] + 0.5) - yi)
            result["fake_quant_vs_integer"].update(surrogate_fraction_differ=float(np.mean(sd > 0)),
                                                   surrogate_max_lsb=int(sd.max()))
        return result

    def format_eval(self, result):
        lines = [f"{result['model']} on the {result['split']} split ({result['windows']} windows)",
                 f"{'model':<12}{'MSE':>10}{'MAE':>10}{'MSE (units²)':>16}{'MAE (units)':>14}"]
        for key in ("fp32", "fake_quant", "integer"):
            if key in result:
                m = result[key]
                lines.append(f"{key:<12}{m['mse']:>10.4f}{m['mae']:>10.4f}{m['mse_units']:>16.2f}"
                             f"{m['mae_units']:>14.3f}")
        if "fake_quant_vs_integer" in result:
            d = result["fake_quant_vs_integer"]
            line = (f"quantized torch forward vs integer: {100 * d['fraction_differ']:.2f}% of outputs differ, "
                    f"at most {d['max_lsb']} LSB")
            if "surrogate_fraction_differ" in d:
                line += (f" (the fake-quant surrogate of its gradients: {100 * d['surrogate_fraction_differ']:.2f}%, "
                         f"at most {d['surrogate_max_lsb']} LSB)")
            lines.append(line)
        return "\n".join(lines)

    def summary_line(self, acc):
        return (f"- accuracy (test MSE, units²): FP32 {fmt(acc.get('fp32_test_mse_units'), '.1f')}, "
                f"deployed integer {fmt(acc.get('int_test_mse_units'), '.1f')}")

    def predictions(self, graph, data, n):
        """``truth``/``pred`` (the first output) in the target's units and their ``mse_units``."""
        x, y = data.test.x[:n], np.asarray(data.test.y[:n])
        _, real = golden_predict(graph, x)
        truth, pred = data.to_units(y.reshape(n, -1)[:, 0]), data.to_units(real[:, 0])
        return {"truth": truth, "pred": pred, "mse_units": float(np.mean((pred - truth) ** 2)), "units": data.target}
