"""The steps users run (train, export, eval, ...), shared by the CLI and the benchmarks."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwgen.data import Dataset, load_csv, load_pm25
from hwgen import jsonio
from hwgen.errors import HwgenError
from hwgen.frontend.checkpoint import fp32_state, load_checkpoint, save_checkpoint
from hwgen.frontend.export import export_model, quantize_input
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.train import TrainOptions, mse_mae, predict, train_fp32, train_qat
from hwgen.golden import run as golden_run
from hwgen.ir.graph import Graph

DATASETS = ("pm25",)


def load_data(dataset: str | None, csv: str | None, target: str | None, features: list[str] | None,
              window: int) -> Dataset:
    """The dataset a training run asks for: a built-in one by name, or a user CSV."""
    if csv:
        if not target:
            raise HwgenError("--csv needs --target COLUMN")
        return load_csv(csv, target=target, features=features, window=window)
    if dataset == "pm25":
        return load_pm25(window=window)
    raise HwgenError(f"unknown dataset {dataset!r} (built in: {', '.join(DATASETS)}; or use --csv FILE)")


def data_descriptor(data: Dataset, csv: str | None) -> dict[str, Any]:
    """What a checkpoint records about its data: enough to reload the same splits and scaling."""
    return {
        "name": "csv" if csv else "pm25",
        "title": data.name,
        "csv": str(Path(csv).resolve()) if csv else None,
        "features": list(data.features),
        "target": data.target,
        "window": data.window,
        "horizon": data.horizon,
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "target_mean": float(data.target_mean),
        "target_std": float(data.target_std),
        "windows": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
        "dropped": dict(data.dropped),
    }


def data_for_checkpoint(meta: dict[str, Any], source: str = "the checkpoint") -> Dataset:
    """Reload the dataset a checkpoint was trained on, checking that its scaling is unchanged; errors about
    the recorded data name ``source``."""
    d = meta["data"]
    if d.get("task", "forecast") != "forecast":  # classification / anomaly detection (hwgen.data.tasks)
        from hwgen.data.tasks import from_descriptor

        return from_descriptor(d)
    missing = [k for k in ("name", "target", "window", "mean", "std") + (("features",) if d.get("csv") else ())
               if k not in d]
    if missing:
        raise HwgenError(f"{source}: its 'data' entry has no {missing[0]!r} key")
    try:
        window = int(d["window"])
    except (TypeError, ValueError):
        raise HwgenError(f"{source}: its data window {d['window']!r} is not an integer") from None
    data = load_data(d["name"] if not d.get("csv") else None, d.get("csv"), d["target"],
                     list(d["features"]) if d.get("csv") else None, window)
    if np.shape(d["mean"]) != data.mean.shape or np.shape(d["std"]) != data.std.shape:
        raise HwgenError(f"the data of {d.get('csv') or d['name']} changed since training (other columns)")
    if not np.allclose(data.mean, d["mean"]) or not np.allclose(data.std, d["std"]):
        raise HwgenError(f"the data of {d.get('csv') or d['name']} changed since training (scaling differs)")
    return data


def train(data: Dataset, cfg: ModelConfig, opts: TrainOptions, out: str, bits: int | None,
          init_from: str | None, csv: str | None, command: str, act_bits: int | None = None) -> dict[str, Any]:
    """Train FP32 (bits None) or QAT at ``bits`` weights and ``act_bits`` (default ``bits``) activations,
    from ``init_from`` or a fresh FP32 model, and save."""
    if cfg.window != data.window or cfg.features != len(data.features):
        cfg = replace(cfg, window=data.window, features=len(data.features))
    cfg.validate()
    start = time.perf_counter()
    if init_from:
        fp32, fmeta = load_checkpoint(init_from)
        if fmeta["config"].get("quantized"):
            raise HwgenError(f"{init_from}: --init-from needs an FP32 checkpoint")
        fcfg = fp32.cfg
        cfg = replace(cfg, **{k: getattr(fcfg, k) for k in ("features", "window", "d_model", "heads", "layers",
                                                            "ffn", "outputs", "norm")})
        if fmeta["data"].get("mean") != data_descriptor(data, csv)["mean"]:
            raise HwgenError(f"{init_from}: was trained on other data than this run's")
        fp32_info = fmeta["train"].get("fp32") or fmeta["train"]
    else:
        fp32, fp32_info = train_fp32(data, cfg, opts)
    result = {"fp32": {k: v for k, v in fp32_info.items() if k != "history"}}
    model = fp32
    if bits is not None:
        qcfg = replace(cfg, quantized=True, bits_w=bits, bits_a=act_bits or bits)
        model, qinfo = train_qat(data, qcfg, fp32, opts)
        result["qat"] = {k: v for k, v in qinfo.items() if k != "history"}
    info = {
        "command": command,
        "seed": opts.seed,
        "seconds": time.perf_counter() - start,
        **result,
    }
    extra = {"fp32_state_dict": fp32.state_dict()} if bits is not None else {}
    save_checkpoint(out, model, data_descriptor(data, csv), info, extra)
    return info


def quantize(fp32_path: str, out: str, bits_w: int, bits_a: int | None = None, method: str = "mse",
             cle: bool = False, bias_correction: bool = False, adaround: bool = False,
             calib_windows: int = 1024, seed: int = 0, command: str = "", adaround_objective: str = "layer",
             progress: bool = True) -> dict[str, Any]:
    """Post-training quantization (hwgen.frontend.ptq) of an FP32 checkpoint at ``bits_w`` weight and
    ``bits_a`` (default ``bits_w``) activation bits, calibrated on ``calib_windows`` training windows of the
    checkpoint's own data; saved like a QAT checkpoint (FP32 weights in ``fp32_state_dict``), so export,
    eval and build take it unchanged. Returns the run's record (also stored in the checkpoint)."""
    from hwgen.frontend.ptq import quantize_model

    bits_a = bits_w if bits_a is None else bits_a
    for what, bits in (("weight", bits_w), ("activation", bits_a)):
        if not isinstance(bits, int) or not 2 <= bits <= 8:
            raise HwgenError(f"{what} bits must be 2..8, not {bits!r}")
    if Path(out).resolve() == Path(fp32_path).resolve():
        raise HwgenError(f"{out}: the output would overwrite the FP32 checkpoint it is made from")
    fp32, fmeta = load_checkpoint(fp32_path)
    if fmeta["config"].get("quantized"):
        raise HwgenError(f"{fp32_path}: already quantized; post-training quantization takes an FP32 "
                         "checkpoint")
    if fmeta["config"].get("task", "forecast") != "forecast":
        raise HwgenError(f"{fp32_path}: post-training quantization supports forecasting models only")
    data = data_for_checkpoint(fmeta, str(fp32_path))
    start = time.perf_counter()
    model, ptq_info = quantize_model(fp32, data, bits_w, bits_a, method=method, cle=cle,
                                     bias_correction=bias_correction, adaround=adaround,
                                     calib_windows=calib_windows, seed=seed, progress=progress,
                                     adaround_objective=adaround_objective)
    info = {
        "command": command,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "fp32": fmeta["train"].get("fp32") or fmeta["train"],
        "ptq": ptq_info,
    }
    save_checkpoint(out, model, fmeta["data"], info, {"fp32_state_dict": fp32.state_dict()})
    return info


def export(model_path: str, out_dir: str, class_scores: bool = True) -> Graph:
    """Export a QAT checkpoint to ``out_dir`` (graph.json + consts.npz); ``class_scores``: a classifier
    returns its class scores after the class index."""
    model, meta = load_checkpoint(model_path)
    graph = export_model(model, {"model": Path(model_path).name, "data": meta["data"]}, class_scores)
    graph.save(out_dir)
    return graph


def _metrics(data: Dataset, pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    mse, mae = mse_mae(pred, y)
    return {"mse": mse, "mae": mae, "mse_units": data.mse_to_units(mse), "mae_units": data.mae_to_units(mae)}


def golden_predict(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The deployed integer model on real windows: quantize inputs, run the golden interpreter, dequantize.

    Returns (integer outputs [n, outputs], real outputs [n, outputs])."""
    xi = quantize_input(x, graph.meta["input_scale"], graph.input_type.dtype.bits)
    yi = np.concatenate([golden_run(graph, xi[i : i + 4096]) for i in range(0, len(xi), 4096)])
    yi = yi.reshape(len(x), -1)
    return yi, yi * graph.meta["output_scale"]


def evaluate(model_path: str, split: str = "test") -> dict[str, Any]:
    """Score a checkpoint on a split: FP32, fake-quant torch and the deployed integer (golden) model."""
    model, meta = load_checkpoint(model_path)
    if model.cfg.task != "forecast":
        from hwgen.tasks import evaluate_task

        return evaluate_task(model, meta, model_path, split)
    data = data_for_checkpoint(meta, str(model_path))
    part = getattr(data, split)
    result: dict[str, Any] = {"model": str(model_path), "split": split, "windows": len(part.x)}
    if not model.cfg.quantized:
        result["fp32"] = _metrics(data, predict(model, part.x), part.y)
        return result
    fp32 = TimeSeriesTransformer(replace(model.cfg, quantized=False))
    fp32.load_state_dict(fp32_state(model_path, meta), strict=False)
    result["fp32"] = _metrics(data, predict(fp32, part.x), part.y)
    fq = predict(model, part.x, double=True)
    result["fake_quant"] = _metrics(data, fq, part.y)
    graph = export_model(model, {"model": Path(model_path).name, "data": meta["data"]})
    yi, yr = golden_predict(graph, part.x)
    result["integer"] = _metrics(data, yr, part.y)
    fq_int = np.floor(fq / graph.meta["output_scale"] + 0.5)
    diff = np.abs(fq_int - yi)
    result["fake_quant_vs_integer"] = {"fraction_differ": float(np.mean(diff > 0)), "max_lsb": int(diff.max())}
    return result


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(jsonio.dumps(obj, str(path), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# One thread: the machines have 2 cores and training often shares them; oversubscribed OpenMP threads
# spin and slow a small model down by an order of magnitude.
torch.set_num_threads(1)
