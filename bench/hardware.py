"""Hardware benchmark: cycles per inference vs parallelism (analytic model, checked by simulation), and the
wall time of build + sim for 256 windows."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hwgen.steps.build import auto_parallel, build, graph_from, simulate_build
from hwgen.estimate.boards import resolve_target
from hwgen.estimate.latency import of_graph as estimate

MODELS = {"w8": "models/pm25_w8.pt", "w6": "models/pm25_w6.pt", "w4": "models/pm25_w4.pt"}
PARALLEL = [1, 4, 8, 16, 20]


def run() -> dict:
    board = resolve_target("xc7s15")
    dsp = board.device.resources.dsp
    out: dict = {"board": board.name, "part": board.part, "dsp": dsp, "clock_mhz": board.clock_mhz, "models": {}}
    for key, path in MODELS.items():
        graph, _ = graph_from(path)
        macs = estimate(graph, 1, dsp_budget=dsp)["macs"]
        auto = auto_parallel(graph, board)
        rows = {}
        for p in sorted(set(PARALLEL + [auto])):
            cycles = estimate(graph, p, dsp_budget=dsp)["total"]  # as built: rescale in fabric as needed
            rows[str(p)] = {"cycles": cycles, "us": cycles / board.clock_mhz, "vs_dsp_bound_of_p": cycles / (macs / p)}
        bound = macs / dsp
        out["models"][key] = {
            "macs": macs, "dsp_bound_cycles": bound, "auto_parallel": auto, "by_parallel": rows,
            "auto_vs_dsp_bound": rows[str(auto)]["cycles"] / bound,
            "target_vs_dsp_bound": 1.5 if key == "w8" else None,
        }
    # build + sim for 256 windows, warm (second run: caches filled), with measured cycles vs the model
    for key in ("w8",):
        with tempfile.TemporaryDirectory() as tmp:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                report = build(MODELS[key], str(Path(tmp) / "b"), "xc7s15", "auto", with_accuracy=False)
                t1 = time.perf_counter()
                sim = simulate_build(str(Path(tmp) / "b"), "verilator", windows=256, stall=0.0)
                t2 = time.perf_counter()
                times.append({"build_s": t1 - t0, "sim_s": t2 - t1, "total_s": t2 - t0})
            model_cycles = report["hardware"]["latency_cycles"]
            out["models"][key]["simulation"] = {
                "windows": sim["windows"], "mismatches": sim["mismatches"],
                "measured_cycles": sim["cycles_per_inference"], "model_cycles": model_cycles,
                "model_error": abs(model_cycles - sim["cycles_per_inference"]) / sim["cycles_per_inference"],
                "sim_cycles_per_s": sim["sim_cycles_per_s"], "cold": times[0], "warm": times[1],
                "target_warm_total_s": 60,
            }
    return out
