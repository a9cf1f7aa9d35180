"""XC7S15 target benchmark: resources (Yosys), latency and energy of each shipped model at --parallel auto."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hwgen.steps.build import build, estimate_build, read_report, simulate_build
from hwgen.errors import HwgenError

MODELS = {"w8": "models/pm25_w8.pt", "w6": "models/pm25_w6.pt", "w4": "models/pm25_w4.pt"}
TARGETS = {"lut_fraction": 0.80, "latency_us_w8": 100.0, "latency_cycles_w8": 5930, "uj_per_inference": 3.3,
           "logic_delay_ns": 5.0}


def run() -> dict:
    rows = {}
    for key, path in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / key)
            build(path, out, "xc7s15", "auto", with_accuracy=False)
            simulate_build(out, "verilator", windows=16)
            try:
                estimate_build(out)
            except HwgenError as exc:  # does not fit: still report the numbers
                print(f"bench: {key}: {exc}")
            r = read_report(Path(out))
        res, hw, en = r["resources"], r["hardware"], r["energy"]
        cap = res["capacity"]
        rows[key] = {
            "parallel": hw["parallel"],
            **{k: res[k] for k in ("lut", "ff", "dsp", "bram36", "fits")},
            **{f"{k}_pct": 100.0 * res[k] / cap[k] for k in ("lut", "ff", "dsp", "bram36")},
            "logic_levels": r["timing"]["logic_levels"],
            "logic_delay_ns": r["timing"].get("logic_delay_ns"),
            "logic_path": [(r["timing"].get("path_start") or {}).get("type"),
                           (r["timing"].get("path_end") or {}).get("type")],
            "latency_cycles": r["sim"]["cycles_per_inference"],
            "latency_us": r["sim"]["cycles_per_inference"] / hw["clock_mhz"],
            "uj_per_inference": en["uj_per_inference"],
            "power_mw": en.get("power_mw"),
            "energy_method": en["method"],
            "meets": {
                "lut": res["lut"] <= TARGETS["lut_fraction"] * cap["lut"],
                "energy": en["uj_per_inference"] <= TARGETS["uj_per_inference"],
                "logic_delay": (r["timing"].get("logic_delay_ns") or float("inf")) <= TARGETS["logic_delay_ns"],
                **({"latency": r["sim"]["cycles_per_inference"] / hw["clock_mhz"] <= TARGETS["latency_us_w8"],
                    "cycles": r["sim"]["cycles_per_inference"] <= TARGETS["latency_cycles_w8"]}
                   if key == "w8" else {}),
            },
        }
    return {"board": "xc7s15", "targets": TARGETS, "models": rows}
