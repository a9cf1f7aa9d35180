"""Design-space search benchmark: trials per hour of the PM2.5 search on this machine (2 workers) and the
Pareto front of validation MSE, latency and LUTs on the XC7S15, two front points re-checked by the real flow."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from hwgen.steps.search import SearchSettings, run_search

MINUTES = 15.0
WORKERS = 2
VERIFY = 2


def run(minutes: float = MINUTES, workers: int = WORKERS, verify: int = VERIFY) -> dict:
    settings = SearchSettings()  # the default PM2.5 space and per-trial budget of 'hwgen search'
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_search(settings, trials=100_000, out=Path(tmp) / "out", study=str(Path(tmp) / "study.db"),
                             workers=workers, verify=verify, timeout=60.0 * minutes)
        wall = time.perf_counter() - t0
    trials = summary["trials"]
    trained = [t for t in trials if t["state"] == "COMPLETE" and t["duplicate_of"] is None]
    run_info = summary["run"]
    return {
        "dataset": settings.dataset,
        "target": settings.target,
        "objectives": summary["objectives"],
        "settings": summary["settings"],
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "workers": workers,
        "search_seconds": run_info["seconds"],
        "trials_finished": run_info["trials_finished"],
        "trials_per_hour": run_info["trials_per_hour"],
        "trained_trials": len(trained),
        "trained_per_hour": round(3600.0 * len(trained) / run_info["seconds"], 1),
        "median_trained_trial_s": round(statistics.median(t["seconds"] for t in trained), 2) if trained else None,
        "counts": summary["counts"],
        "pareto_front": [{"number": p["number"], **p["params"],
                          **{k: p["metrics"][k] for k in ("val_mse", "val_mse_units", "latency_cycles", "latency_us",
                                                          "lut", "ff", "dsp", "bram36", "uj_per_inference")}}
                         for p in summary["pareto_front"]],
        "verified": summary.get("verified", []),
        "verify_seconds": round(wall - run_info["seconds"], 1),
        "failures": sorted({f"{t['failure_kind']}: {t['failure']}" for t in trials if t["state"] == "FAIL"})[:20],
    }
