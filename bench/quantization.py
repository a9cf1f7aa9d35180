"""The quantization benchmark: the deployed integer model's PM2.5 test MSE for every quantization method,
mean and std over 3 seeds, with oscillation statistics and training time.

Every run uses the recipe `hwgen train` uses by default: FP32 up to 60 epochs, QAT up to 20 epochs from it,
early stopping on validation MSE (patience 10). Rows: FP32; PTQ W8A8 (min-max ranges, and the full
pipeline); QAT (LSQ, MSE-initialised scales) at W8A8, W6A6, W4A8, W4A4, W3A8, W3A3 with the residual stream
at 12 bits; at W4A4 and W3A3 with oscillation dampening and with iterative freezing, W3A8 with dampening; at
W4A4 and W3A3 with the residual stream at 8 bits, without and with per-embedding-group quantization (4
groups); W4A4 with the attention's activations at 8 bits (mixed precision). Every QAT run starts from the FP32
model of its seed.

Runs go to two worker processes (one torch thread each) and are cached under runs/bench_quantization/, so an
interrupted benchmark resumes where it stopped. HWGEN_BENCH_QUICK=1 shrinks everything for a smoke run.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

QUICK = os.environ.get("HWGEN_BENCH_QUICK") == "1"
SEEDS = (0,) if QUICK else (0, 1, 2)
FP32_EPOCHS, QAT_EPOCHS, PATIENCE = 60, 20, 10
# cached runs are per schedule: a changed schedule starts afresh
CACHE = Path("runs/bench_quantization_quick" if QUICK else f"runs/bench_quantization_{FP32_EPOCHS}_{QAT_EPOCHS}")

QAT_ROWS = {
    "qat_w8a8": dict(bits_w=8, bits_a=8),
    "qat_w6a6": dict(bits_w=6, bits_a=6),
    "qat_w4a8": dict(bits_w=4, bits_a=8),
    "qat_w4a4": dict(bits_w=4, bits_a=4),
    "qat_w3a8": dict(bits_w=3, bits_a=8),
    "qat_w3a3": dict(bits_w=3, bits_a=3),
    "qat_w4a4_dampen": dict(bits_w=4, bits_a=4, train=dict(dampen=0.5)),
    "qat_w4a4_freeze": dict(bits_w=4, bits_a=4, train=dict(freeze=True)),
    "qat_w3a3_dampen": dict(bits_w=3, bits_a=3, train=dict(dampen=0.5)),
    "qat_w3a3_freeze": dict(bits_w=3, bits_a=3, train=dict(freeze=True)),
    "qat_w4a4_res8": dict(bits_w=4, bits_a=4, bits_res=8),
    "qat_w4a4_res8_peg4": dict(bits_w=4, bits_a=4, bits_res=8, peg_groups=4),
    "qat_w3a3_res8": dict(bits_w=3, bits_a=3, bits_res=8),
    "qat_w3a3_res8_peg4": dict(bits_w=3, bits_a=3, bits_res=8, peg_groups=4),
    "qat_w3a8_dampen": dict(bits_w=3, bits_a=8, train=dict(dampen=0.5)),
    "qat_w4a4_attn8": dict(bits_w=4, bits_a=4, precision="attn.a=8"),
}
PTQ_ROWS = {
    "ptq_w8a8_minmax": dict(method="minmax"),
    "ptq_w8a8_full": dict(full=True),
}


def _quick() -> bool:
    return QUICK


def _data():
    from hwgen.data import load_pm25

    data = load_pm25(window=24)
    if _quick():
        data = replace(data, train=replace(data.train, x=data.train.x[:1024], y=data.train.y[:1024]),
                       val=replace(data.val, x=data.val.x[:512], y=data.val.y[:512]))
    return data


def _integer_test_mse(model, data) -> dict:
    """Test MSE of the deployed integer (golden) model, normalised and in (µg/m³)²."""
    from hwgen.tasks.forecast import golden_predict
    from hwgen.frontend.export import export_model
    from hwgen.tasks.metrics import mse_mae

    graph = export_model(model)
    _, yr = golden_predict(graph, data.test.x)
    mse, _ = mse_mae(yr, data.test.y)
    return {"mse": mse, "mse_units": data.mse_to_units(mse)}


def _fp32(seed: int) -> dict:
    import torch

    from hwgen.frontend.model import ModelConfig
    from hwgen.frontend.train import TrainOptions, predict, train_fp32
    from hwgen.tasks.metrics import mse_mae

    torch.set_num_threads(1)
    path = CACHE / f"fp32_s{seed}.pt"
    data = _data()
    epochs = 2 if _quick() else FP32_EPOCHS
    model, info = train_fp32(data, ModelConfig(), TrainOptions(epochs=epochs, patience=PATIENCE, seed=seed,
                                                                progress=False))
    torch.save(model.state_dict(), path)
    mse, _ = mse_mae(predict(model, data.test.x), data.test.y)
    return {"mse": mse, "mse_units": data.mse_to_units(mse), "seconds": info["seconds"],
            "epochs_run": info["epochs_run"], "val_mse": info["val_mse"]}


def _load_fp32(seed: int):
    import torch

    from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer

    model = TimeSeriesTransformer(ModelConfig())
    model.load_state_dict(torch.load(CACHE / f"fp32_s{seed}.pt", weights_only=True))
    return model.eval()


def _qat(name: str, seed: int) -> dict:
    import torch

    from hwgen.frontend.train import TrainOptions, train_qat

    torch.set_num_threads(1)
    spec = dict(QAT_ROWS[name])
    train_extra = spec.pop("train", {})
    data = _data()
    fp32 = _load_fp32(seed)
    cfg = replace(fp32.cfg, quantized=True, **spec)
    opts = TrainOptions(qat_epochs=1 if _quick() else QAT_EPOCHS, patience=PATIENCE, seed=seed, progress=False,
                        **train_extra)
    model, info = train_qat(data, cfg, fp32, opts)
    keep = ("seconds", "val_mse", "epochs_run", "osc_fraction", "frozen_fraction", "best_epoch")
    result = {k: info[k] for k in keep if k in info}
    result["history"] = [{k: v for k, v in h.items() if k in ("epoch", "val_mse", "osc_fraction", "frozen_fraction")}
                         for h in info.get("history", [])]
    return {**result, **_integer_test_mse(model, data)}


def _ptq(name: str, seed: int) -> dict:
    import torch

    from hwgen.frontend import ptq

    torch.set_num_threads(1)
    data = _data()
    fp32 = _load_fp32(seed)
    spec = PTQ_ROWS[name]
    start = time.perf_counter()
    if spec.get("full"):
        model, info = ptq.quantize_model(fp32, data, 8, 8, seed=seed, progress=False, **ptq.PIPELINES["full"])
    else:
        model, info = ptq.quantize_model(fp32, data, 8, 8, method=spec["method"], seed=seed, progress=False)
    return {"seconds": time.perf_counter() - start, **_integer_test_mse(model, data)}


def _job(kind: str, name: str, seed: int) -> tuple[str, int, dict]:
    out = CACHE / f"{name}_s{seed}.json"
    if out.exists():
        return name, seed, json.loads(out.read_text())
    fn = {"fp32": lambda: _fp32(seed), "qat": lambda: _qat(name, seed), "ptq": lambda: _ptq(name, seed)}[kind]
    try:
        result = fn()
    except Exception as exc:  # recorded, the table goes on
        result = {"error": f"{type(exc).__name__}: {exc}"}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    return name, seed, result


def _summary(runs: dict[int, dict], fp32_units: float | None) -> dict:
    ok = [runs[s] for s in sorted(runs) if "error" not in runs[s]]  # values in seed order
    row: dict = {"seeds": sorted(s for s, r in runs.items() if "error" not in r),
                 "errors": {s: r["error"] for s, r in runs.items() if "error" in r}}
    if not ok:
        return row
    for key in ("mse", "mse_units", "seconds", "osc_fraction", "frozen_fraction"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        if vals:
            row[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals}
    if fp32_units:
        row["vs_fp32"] = row["mse_units"]["mean"] / fp32_units
    return row


def run(workers: int = 2) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, dict[int, dict]] = {}

    def collect(jobs) -> None:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_job, *j) for j in jobs]
            for fut in as_completed(futures):
                name, seed, result = fut.result()
                results.setdefault(name, {})[seed] = result
                msg = result.get("error") or f"{result.get('mse_units', float('nan')):.2f} (µg/m³)²"
                print(f"bench quantization: {name} seed {seed}: {msg} "
                      f"[{time.perf_counter() - start:.0f} s]", flush=True)

    collect([("fp32", "fp32", s) for s in SEEDS])
    collect([("ptq", n, s) for n in PTQ_ROWS for s in SEEDS] + [("qat", n, s) for n in QAT_ROWS for s in SEEDS])
    fp32 = _summary(results["fp32"], None)
    fp32_units = fp32.get("mse_units", {}).get("mean")
    rows = {"fp32": fp32, **{n: _summary(results[n], fp32_units) for n in [*PTQ_ROWS, *QAT_ROWS]}}
    return {
        "dataset": "pm25 (test split, deployed integer model unless FP32)",
        "seeds": list(SEEDS),
        "schedule": {"fp32_epochs": FP32_EPOCHS, "qat_epochs": QAT_EPOCHS, "patience": PATIENCE, "quick": _quick()},
        "rows": rows,
        "total_seconds": time.perf_counter() - start,
    }


LABELS = {
    "fp32": "FP32", "ptq_w8a8_minmax": "PTQ W8A8, min-max ranges", "ptq_w8a8_full": "PTQ W8A8, full pipeline",
    "qat_w8a8": "QAT W8A8", "qat_w6a6": "QAT W6A6", "qat_w4a8": "QAT W4A8", "qat_w3a8": "QAT W3A8",
    "qat_w3a8_dampen": "QAT W3A8 + dampening", "qat_w4a4": "QAT W4A4", "qat_w4a4_dampen": "QAT W4A4 + dampening",
    "qat_w4a4_freeze": "QAT W4A4 + freezing", "qat_w4a4_res8": "QAT W4A4, 8-bit residual",
    "qat_w4a4_res8_peg4": "QAT W4A4, 8-bit residual + PEG (4 groups)",
    "qat_w4a4_attn8": "QAT W4A4, attention activations 8-bit (mixed precision)", "qat_w3a3": "QAT W3A3",
    "qat_w3a3_dampen": "QAT W3A3 + dampening", "qat_w3a3_freeze": "QAT W3A3 + freezing",
    "qat_w3a3_res8": "QAT W3A3, 8-bit residual", "qat_w3a3_res8_peg4": "QAT W3A3, 8-bit residual + PEG (4 groups)",
}


def markdown(result: dict) -> str:
    """The README table of a quantization.json."""
    lines = ["| method | test MSE (µg/m³)² | normalised MSE | vs FP32 | oscillating | frozen | train s |",
             "|---|---|---|---|---|---|---|"]

    def ms(row, key, fmt):
        v = row.get(key)
        return "–" if not v else f"{v['mean']:{fmt}} ± {v['std']:{fmt}}"

    rows = result["rows"]  # in the order of LABELS (the JSON file holds them sorted by name)
    for name in [*[n for n in LABELS if n in rows], *[n for n in rows if n not in LABELS]]:
        row = rows[name]
        if "mse_units" not in row:
            lines.append(f"| {LABELS.get(name, name)} | failed: {row.get('errors')} | | | | | |")
            continue
        vs = f"{100 * (row['vs_fp32'] - 1):+.1f}%" if "vs_fp32" in row else "–"
        osc = ms(row, "osc_fraction", ".4f")
        frz = ms(row, "frozen_fraction", ".4f")
        lines.append(f"| {LABELS.get(name, name)} | {ms(row, 'mse_units', '.1f')} | {ms(row, 'mse', '.4f')} | {vs} | "
                     f"{osc} | {frz} | {row.get('seconds', {}).get('mean', 0):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/quantization.json").read_text())))
