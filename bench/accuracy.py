"""Accuracy benchmark: the deployed integer model of each shipped checkpoint on the PM2.5 test split, and of
W4A4 (not shipped: trained here with the shipped recipe, about two minutes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hwgen.steps import flow
from hwgen.frontend.checkpoint import load_checkpoint

MODELS = {"fp32": "models/pm25_fp32.pt", "w8": "models/pm25_w8.pt", "w6": "models/pm25_w6.pt",
          "w4": "models/pm25_w4.pt"}
TARGETS = {"w8": 1.01, "w4": 1.03, "w4a4": 1.10}  # deployed test MSE relative to FP32
# not shipped: trained by the benchmark from the shipped FP32 checkpoint (scripts/train_models.sh's recipe)
TRAINED = {"w4a4": ["--dataset", "pm25", "--bits", "4", "--act-bits", "4", "--init-from", "models/pm25_fp32.pt",
                    "--seed", "0"]}


def _train(key: str, folder: Path) -> str:
    from hwgen.steps.cli import main

    out = folder / f"pm25_{key}.pt"
    if main(["train", *TRAINED[key], "--out", str(out), "--quiet"]) != 0:
        raise RuntimeError(f"training {key} failed")
    return str(out)


def run() -> dict:
    """Score every shipped checkpoint; returns the JSON written to bench/results/accuracy.json."""
    rows = {}
    tmp = tempfile.TemporaryDirectory(prefix="hwgen-bench-accuracy-")
    models = {**MODELS, **{key: _train(key, Path(tmp.name)) for key in TRAINED}}
    for key, path in models.items():
        if not Path(path).is_file():
            rows[key] = {"error": f"{path} missing"}
            continue
        test = flow.evaluate(path, "test")
        val = flow.evaluate(path, "val")
        _, meta = load_checkpoint(path)
        deployed = "integer" if "integer" in test else "fp32"
        train = meta["train"]
        rows[key] = {
            "checkpoint": path,
            "deployed": deployed,
            "test_mse": test[deployed]["mse"],
            "test_mse_units": test[deployed]["mse_units"],
            "test_mae_units": test[deployed]["mae_units"],
            "val_mse": val[deployed]["mse"],
            "fp32_test_mse": test["fp32"]["mse"],
            "fp32_test_mse_units": test["fp32"]["mse_units"],
            "fake_quant_test_mse": test.get("fake_quant", {}).get("mse"),
            "fake_quant_vs_integer": test.get("fake_quant_vs_integer"),
            "train_seconds": train.get("seconds"),
            "train_command": train.get("command"),
            "shipped": key not in TRAINED,
        }
    tmp.cleanup()
    fp32 = rows.get("fp32", {}).get("test_mse")
    for key, row in rows.items():
        if fp32 and "test_mse" in row:
            row["ratio_to_fp32"] = row["test_mse"] / fp32
            if key in TARGETS:
                row["target_ratio"] = TARGETS[key]
                row["meets_target"] = row["ratio_to_fp32"] <= TARGETS[key]
    return {"dataset": "pm25", "split": "test", "units": "(ug/m3)^2", "baselines_test_mse_units":
            {"persistence": 498.69, "ridge": 466.25}, "models": rows}
