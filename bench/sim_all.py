"""The whole test split in RTL: models/pm25_w8.pt built at --parallel auto (no eval), then every window of its
test split through the Verilog on Verilator (stall 0), compared with the golden model (==)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hwgen.steps.build import build, simulate_build

MODEL = "models/pm25_w8.pt"
TARGET_WALL_S = 600  # the whole test split bit-exact in at most 10 minutes on a 2-core machine


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "b")
        t0 = time.perf_counter()
        report = build(MODEL, out, "xc7s15", "auto", with_accuracy=False)
        t1 = time.perf_counter()
        sim = simulate_build(out, "verilator", windows=None, stall=0.0)  # None: every test window
        t2 = time.perf_counter()
    wall = t2 - t1
    return {
        "model": MODEL,
        "board": report["hardware"].get("board"),
        "parallel": report["hardware"].get("parallel"),
        "simulator": sim["simulator"],
        "stall_probability": sim["stall_probability"],
        "windows": sim["windows"],
        "mismatches": sim["mismatches"],
        "cycles_per_inference": sim["cycles_per_inference"],
        "cycles_per_inference_min_max": sim["cycles_per_inference_min_max"],
        "sim_cycles_per_s": sim["sim_cycles_per_s"],
        "sim_wall_s": round(sim["wall_s"], 1),  # simulate(): golden outputs, simulator build (cached or not), run
        "build_s": round(t1 - t0, 1),
        "wall_s": round(wall, 1),  # the `hwgen sim --windows all` step, end to end
        "target_wall_s": TARGET_WALL_S,
        "target_met": sim["mismatches"] == 0 and wall <= TARGET_WALL_S,
    }
