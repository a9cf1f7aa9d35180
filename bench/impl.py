"""Open implementation (`hwgen impl`): the shipped PM2.5 models placed, routed and timed with open tools.

- W8 and W4 on the LFE5U-25F (ULX3S 25F, speed 6) at --parallel auto, timed against 100 MHz (the XC7S15's
  clock): fit, post-route Fmax, the critical path, wall time of build and flow; W8 also with nextpnr seeds
  2 and 3 (``other_seeds``).
- The W8 XC7S15 build (P = 13) on the LFE5U-85F (ULX3S 85F) as the proxy `hwgen estimate` shows.
- iCE40 UP5K (iCEBreaker): the largest parallelism of the reference model that fits, tried from the
  family model's choice down to 1 lane; its post-route Fmax against 30 MHz, cycles and microseconds per
  inference at that Fmax. When no parallelism fits, the reason (Yosys's counts against the part).

``HWGEN_BENCH_QUICK=1`` runs the W8 ECP5 point only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hwgen.errors import HwgenError
from hwgen.steps.build import build, read_report
from hwgen.steps.impl import implement_build

MODELS = Path("models")


def _implementation(out: Path, board: str) -> tuple[dict[str, Any], float | None]:
    """The build's ``implementation.<board>`` section and its lowest post-route Fmax (None without one)."""
    sec = read_report(out).get("implementation", {}).get(board, {})
    return sec, min(sec.get("fmax_mhz", {}).values(), default=None)


def _flow(model: str, board: str, parallel: str | int, clock_mhz: float | None, work: Path, tag: str,
          impl_board: str | None = None, force: bool = False) -> dict[str, Any]:
    out = work / tag
    t0 = time.perf_counter()
    build(str(MODELS / model), str(out), board_name=board, parallel=parallel, with_accuracy=False, force=force)
    build_s = time.perf_counter() - t0
    hardware = read_report(out)["hardware"]
    error = None
    t1 = time.perf_counter()
    try:
        implement_build(str(out), impl_board, clock_mhz)
    except HwgenError as exc:
        error = str(exc)
    flow_s = time.perf_counter() - t1
    sec, fmax = _implementation(out, impl_board or board)
    cycles = hardware["latency_cycles"]
    return {
        "model": model, "board": impl_board or board, "built_for": board, "device": sec.get("device"),
        "speed": sec.get("speed"), "parallel": hardware["parallel"], "fits": sec.get("fits"),
        "clock_target_mhz": sec.get("clock_mhz"), "fmax_mhz": fmax, "met": sec.get("met"),
        "critical_path": sec.get("critical_path"), "utilisation": sec.get("utilisation"),
        "synthesis": sec.get("synthesis"), "cycles_per_inference": cycles,
        "us_per_inference_at_fmax": round(cycles / fmax, 1) if fmax else None,
        "build_s": round(build_s, 1), "impl_s": round(flow_s, 1), "tool": sec.get("tool"),
        "error": error,
    }


def _other_seeds(out: Path, board: str, clock_mhz: float, seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """The same build placed and routed again with other nextpnr seeds: how much of the Fmax is placement."""
    rows = []
    for seed in seeds:
        try:
            implement_build(str(out), board, clock_mhz, seed=seed)
        except HwgenError:
            pass  # a missed clock still writes the section
        sec, fmax = _implementation(out, board)
        rows.append({"seed": seed, "fmax_mhz": fmax, "met": sec.get("met"), "critical_path": sec.get("critical_path")})
    return rows


def run() -> dict[str, Any]:
    quick = os.environ.get("HWGEN_BENCH_QUICK") == "1"
    work = Path(tempfile.mkdtemp(prefix="hwgen-bench-impl-"))
    result: dict[str, Any] = {"ecp5": [], "ice40": {}, "proxy": None}
    try:
        for model in ("pm25_w8.pt",) if quick else ("pm25_w8.pt", "pm25_w4.pt"):
            result["ecp5"].append(_flow(model, "ulx3s_25f", "auto", 100.0, work, f"ecp5-{model}"))
            if not quick and model == "pm25_w8.pt":
                result["ecp5"][-1]["other_seeds"] = _other_seeds(work / f"ecp5-{model}", "ulx3s_25f", 100.0, (2, 3))
        if quick:
            return result
        result["proxy"] = _flow("pm25_w8.pt", "xc7s15", "auto", 100.0, work, "proxy", impl_board="ulx3s_85f")
        tries = []
        try:
            from hwgen.estimate.boards import load_board
            from hwgen.estimate.family_model import choose_parallel_family
            from hwgen.steps.build import graph_from

            graph, _ = graph_from(str(MODELS / "pm25_w8.pt"))
            start = choose_parallel_family(graph, load_board("icebreaker"), "auto")
        except HwgenError as exc:
            tries.append({"parallel": "auto", "error": str(exc)})
            start = 1
        for p in range(start, 0, -1):
            point = _flow("pm25_w8.pt", "icebreaker", p, 30.0, work, f"ice40-p{p}", force=True)
            tries.append(point)
            if point["fits"]:
                break
        fitting = [t for t in tries if t.get("fits")]
        result["ice40"] = {"tries": tries, "largest_fitting_parallel": fitting[0]["parallel"] if fitting else None}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
