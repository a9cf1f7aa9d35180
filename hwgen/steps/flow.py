"""The torch steps users run (train, quantize, export, eval), shared by the CLI and the benchmarks.

Importing this module loads torch but changes no global state: the CLI sets torch's thread count for the
torch commands (``hwgen.steps.cli``)."""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwgen import jsonio
from hwgen.errors import HwgenError
from hwgen.frontend.checkpoint import fp32_state, load_checkpoint, save_checkpoint
from hwgen.frontend.export import export_model
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.train import TrainOptions, predict, train_fp32, train_qat
from hwgen.ir.graph import Graph
from hwgen.tasks import Task
from hwgen.tasks import get as get_task
from hwgen.tasks.anomaly import (SCORE_TRAIN_MAX, THRESHOLD_QUANTILE, host_scores, integer_threshold,
                                 normal_windows)
from hwgen.tasks.base import integer_outputs


def train(data, task: Task, cfg: ModelConfig, opts: TrainOptions, out: str, bits: int | None, command: str,
          csv: str | None = None, dataset: str | None = None, init_from: str | None = None,
          act_bits: int | None = None, quantile: float = THRESHOLD_QUANTILE) -> dict[str, Any]:
    """Train FP32 (bits None) or QAT at ``bits`` weights and ``act_bits`` (default ``bits``) activations,
    from ``init_from`` (an FP32 checkpoint) or a fresh FP32 model, and save. A task whose graph flags scores
    above a threshold gets it calibrated after QAT (the ``quantile`` of the normal windows' scores)."""
    cfg = task.model_config(cfg, data).validate()
    opts = task.train_options(opts, len(data.train.x))
    descriptor = task.describe_data(data, dataset, csv, opts.seed)
    start = time.perf_counter()
    if init_from:
        fp32, fmeta = load_checkpoint(init_from)
        if fmeta["config"].get("quantized"):
            raise HwgenError(f"{init_from}: --init-from needs an FP32 checkpoint")
        fcfg = fp32.cfg
        cfg = replace(cfg, **{k: getattr(fcfg, k) for k in ("features", "window", "d_model", "heads", "layers",
                                                            "ffn", "outputs", "norm")})
        if fmeta["data"].get("mean") != descriptor["mean"]:
            raise HwgenError(f"{init_from}: was trained on other data than this run's")
        fp32_info = fmeta["train"].get("fp32") or fmeta["train"]
    else:
        fp32, fp32_info = train_fp32(data, cfg, opts)
    info: dict[str, Any] = {"command": command, "seed": opts.seed, **task.train_record(opts),
                            "fp32": {k: v for k, v in fp32_info.items() if k != "history"}}
    model = fp32
    if bits is not None:
        qcfg = replace(cfg, quantized=True, bits_w=bits, bits_a=act_bits or bits)
        model, qinfo = train_qat(data, qcfg, fp32, opts)
        info["qat"] = {k: v for k, v in qinfo.items() if k != "history"}
        if task.scores_threshold:
            info["threshold"] = calibrate_threshold(model, data, quantile)
    if task.scores_threshold:
        info["threshold_quantile"] = quantile
    info["seconds"] = time.perf_counter() - start
    extra = {"fp32_state_dict": fp32.state_dict()} if bits is not None else {}
    save_checkpoint(out, model, descriptor, info, extra)
    return info


def calibrate_threshold(model: TimeSeriesTransformer, data, quantile: float) -> int:
    """Set a QAT anomaly model's score unit (the largest fake-quant training score -> SCORE_TRAIN_MAX) and
    its integer threshold (the ``quantile`` of the deployed integer scores of the normal windows, rounded
    up). Returns the threshold."""
    fq = host_scores(predict(model, data.train.x, double=True), data.train.x, model.cfg.scored_steps)
    model.score_scale.fill_(max(float(fq.max()), 1e-6) / SCORE_TRAIN_MAX)
    model.score_threshold.fill_(-1)
    graph = export_model(model, {})
    threshold = integer_threshold(integer_outputs(graph, normal_windows(data))[:, 0], quantile)
    model.score_threshold.fill_(threshold)
    return threshold


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
    task = get_task(fmeta["config"].get("task", "forecast"))
    if not task.post_training_quantization:
        raise HwgenError(f"{fp32_path}: post-training quantization supports forecasting models only")
    data = _reload_data(task, fmeta, fp32_path)
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


def evaluate(model_path: str, split: str = "test") -> dict[str, Any]:
    """Score a checkpoint on a split: FP32, fake-quant torch and the deployed integer (golden) model, in the
    metrics of its task."""
    model, meta = load_checkpoint(model_path)
    task = get_task(model.cfg.task)
    data = _reload_data(task, meta, model_path)
    models = {"fp32": model}
    if model.cfg.quantized:
        fp32 = TimeSeriesTransformer(replace(model.cfg, quantized=False))
        fp32.load_state_dict(fp32_state(model_path, meta), strict=False)
        models = {"fp32": fp32, "fake_quant": model}
    if model.cfg.quantized:  # the fake-quant surrogate whose gradient QAT follows (the forward is exact)
        surrogate = copy.deepcopy(model)
        surrogate.exact = False
        models["surrogate"] = surrogate
    predictors = {key: functools.partial(predict, m, double=key != "fp32") for key, m in models.items()}
    graph = export_model(model, {"model": Path(model_path).name, "data": meta["data"]}) if model.cfg.quantized else None
    return task.evaluate(data, split, predictors, graph, model.cfg, meta, model_path)


def _reload_data(task: Task, meta: dict[str, Any], source) -> Any:
    """The dataset a checkpoint records, reloaded by its task; HwgenError naming the checkpoint when its
    ``data`` entry is incomplete or malformed."""
    try:
        return task.reload_data(meta["data"])
    except KeyError as exc:
        raise HwgenError(f"{source}: its 'data' entry has no {exc.args[0]!r} key") from None
    except (TypeError, ValueError) as exc:
        raise HwgenError(f"{source}: its 'data' entry is malformed ({exc})") from None


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(jsonio.dumps(obj, str(path), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)

