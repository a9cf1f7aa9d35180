"""How many random configurations of the design-space search fit the XC7S15, verified by Yosys.

30 architectures drawn with a fixed seed from the search's default choices (``hwgen.steps.search.SearchSpace``:
window, d_model, heads, layers, FFN width; norm batch or layer, as ``bench/resources_model.py`` draws them;
d_model not divisible by heads redrawn), 10 each at 4, 6 and 8 bits (weights = activations), each built as
``bench/resources_model.py`` builds its held-out designs (a quantized ``TimeSeriesTransformer`` with random
weights, its ranges calibrated on 64 random windows of 7 features, the normal export), plus that benchmark's
2-layer d_model-32 2-head LayerNorm window-48 W4 model (``LARGE``). For each: ``hwgen build --parallel auto``'s
choice for the xc7s15 board (``hwgen.steps.build.settle_parallel``: the parallelism and the design's options,
row pairs and any activation buffers moved into distributed RAM), its analytic cycles
(``hwgen.estimate.latency``), the resource model's prediction (``hwgen.estimate.model``) and Yosys
synth_xilinx's counts of that design's Verilog; where auto refuses every parallelism, Yosys at P = 1 shows how far
the design is from fitting. A design fits when Yosys' LUTs are within ``LUT_MARGIN`` of the part's and its
DSP48E1 and BRAM36 within the part's. Yosys counts are cached by the Verilog's SHA-256 in
``bench/results/fit_yosys.json`` (a rerun synthesizes only new designs).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

from bench.resources_model import (ARCH_NAMES, LARGE, design_for, draw_architecture, graph_for, load_cache,
                                   save_cache, valid_architecture, yosys_counts)

CACHE = Path("bench/results/fit_yosys.json")
BOARD = "xc7s15"
SEED = 7
N_CONFIGS = 30
BITS = (4, 6, 8)  # weight = activation bits, taken in turn: N_CONFIGS / 3 at each
RESOURCES = ("lut", "dsp", "bram36")  # the resources a fit is decided on
# the target: every configuration this small fits at 4 bits
TARGET = {"d_model": 32, "layers": 2, "window": 48}
TARGET_BITS = 4


def draw_configs(n: int = N_CONFIGS, seed: int = SEED) -> list[dict]:
    """``n`` distinct valid architectures from ``SearchSpace()``'s default choices, the i-th at ``BITS[i % 3]``
    bits for weights and activations."""
    from hwgen.steps.search import SearchSpace

    space, rng, out, seen = SearchSpace(), random.Random(seed), [], set()
    while len(out) < n:
        arch = draw_architecture(rng, space, ARCH_NAMES)
        bits = BITS[len(out) % len(BITS)]
        arch.update(bits_w=bits, bits_a=bits)
        key = json.dumps(arch, sort_keys=True)
        if not valid_architecture(arch) or key in seen:
            continue
        seen.add(key)
        out.append(arch)
    return out


def limits(capacity) -> dict[str, float]:
    """What a design may use of ``capacity`` (a part's ``PartResources``): LUTs within ``LUT_MARGIN``."""
    from hwgen.estimate.resources import LUT_MARGIN

    return {"lut": LUT_MARGIN * capacity.lut, "dsp": float(capacity.dsp), "bram36": float(capacity.bram36)}


def judge(counts: dict, limit: dict[str, float]) -> dict:
    """Whether ``counts`` fit ``limit``, the binding resource (the highest share of its limit) and by how much
    each resource over its limit is over."""
    share = {k: counts[k] / limit[k] for k in RESOURCES}
    binding = max(RESOURCES, key=lambda k: share[k])
    over = {k: round(counts[k] - limit[k], 1) for k in RESOURCES if counts[k] > limit[k]}
    return {"fits": not over, "binding": binding, "utilisation": {k: round(v, 3) for k, v in share.items()},
            "over": over}


def target_config(arch: dict) -> bool:
    return all(arch[k] <= v for k, v in TARGET.items()) and arch["bits_w"] == arch["bits_a"] == TARGET_BITS


def evaluate(arch: dict, board, cache: dict) -> dict:
    """One design: auto's choice, its cycles, the model's prediction and Yosys' counts (P = 1 if refused)."""
    from hwgen.errors import HwgenError
    from hwgen.estimate.latency import estimate as latency_estimate
    from hwgen.estimate.model import fits, predict
    from hwgen.steps.build import build_options, candidate, settle_parallel

    cap = board.device.resources
    graph = graph_for(arch)
    start = time.perf_counter()
    try:
        (p, options), refusal = settle_parallel(graph, board, "auto"), None
    except HwgenError as exc:
        p, refusal = None, str(exc)
        options = build_options(candidate(graph, board, 1)[0])  # what `--parallel 1 --force` builds
    auto_seconds = time.perf_counter() - start
    checked = p or 1
    design = design_for(graph, checked, **options)  # the design `hwgen build` makes (pairs, buffers)
    pred = predict(design)
    before = len(cache)
    got = yosys_counts(graph, checked, cache, **options)
    yosys = {k: got[k] for k in ("lut", "ff", "dsp", "bram36")}
    row = {"arch": arch, "auto": {"found": p is not None, "parallel": p, "refusal": refusal,
                                  "seconds": round(auto_seconds, 1)},
           "parallel_checked": checked, "cycles": int(latency_estimate(design)["total"]),
           "row_pairs": sum(design.paired(i) for i in range(len(graph.nodes))),
           "distributed_buffers": sorted(design.distributed_buffers),
           "predicted": {k: round(float(pred[k]), 1) for k in ("lut", "ff", "dsp", "bram36")},
           "predicted_fits": bool(fits(pred, cap)), "yosys": yosys, "yosys_seconds": got["seconds"],
           "yosys_cached": len(cache) == before}  # no new entry: counted by an earlier run
    row.update(judge(yosys, limits(cap)))
    return row


def summary(rows: list[dict]) -> dict:
    """Counts over ``rows`` (``evaluate``'s): fit by Yosys, refused by auto, accepted by auto but not fitting
    (the model's error), refused but fitting at P = 1 (the model too cautious), the model against Yosys, and
    the target check (``not_fit``: the numbers, from 1, of the target designs that do not fit)."""
    target = [i for i, r in enumerate(rows) if target_config(r["arch"])]
    lut_error = [(r["predicted"]["lut"] - r["yosys"]["lut"]) / r["yosys"]["lut"] for r in rows]
    return {
        "designs": len(rows),
        "fit": sum(r["fits"] for r in rows),
        "auto_refused": sum(not r["auto"]["found"] for r in rows),
        "auto_accepted_not_fit": sum(r["auto"]["found"] and not r["fits"] for r in rows),
        "auto_refused_but_fits_at_p1": sum(not r["auto"]["found"] and r["fits"] for r in rows),
        "not_fit_by_binding_resource": dict(sorted(Counter(r["binding"] for r in rows if not r["fits"]).items())),
        "model": {"max_abs_lut_error": round(max(map(abs, lut_error), default=0.0), 4),
                  "dsp_exact": sum(r["predicted"]["dsp"] == r["yosys"]["dsp"] for r in rows),
                  "bram36_exact": sum(r["predicted"]["bram36"] == r["yosys"]["bram36"] for r in rows)},
        "target": {"rule": f"d_model <= {TARGET['d_model']}, layers <= {TARGET['layers']}, window <= "
                           f"{TARGET['window']} at {TARGET_BITS} bits",
                   "designs": len(target), "fit": sum(rows[i]["fits"] for i in target),
                   "all_fit": all(rows[i]["fits"] for i in target),
                   "not_fit": [i + 1 for i in target if not rows[i]["fits"]]},  # design numbers, from 1
    }


def _line(name: str, row: dict, seconds: float) -> str:
    a = row["arch"]
    auto = f"auto P={row['auto']['parallel']}" if row["auto"]["found"] else "auto refused, P=1"
    y = row["yosys"]
    verdict = "fits" if row["fits"] else f"does not fit ({', '.join(f'{k} +{v:g}' for k, v in row['over'].items())})"
    return (f"fit: {name} w{a['window']} d{a['d_model']} h{a['heads']} L{a['layers']} f{a['ffn']} {a['norm']} "
            f"W{a['bits_w']}: {auto}, {row['cycles']} cycles, yosys {y['lut']} LUT {y['dsp']} DSP {y['bram36']:g} "
            f"BRAM36 -> {verdict} ({seconds:.0f} s)")


def run() -> dict:
    from hwgen.estimate.boards import resolve_target

    board = resolve_target(BOARD)
    cache = load_cache(CACHE)
    designs = [(f"{i + 1}/{N_CONFIGS}", arch) for i, arch in enumerate(draw_configs())] + [("large", LARGE)]
    rows = []
    for name, arch in designs:
        start = time.perf_counter()
        row = evaluate(arch, board, cache)
        save_cache(cache, CACHE)
        print(_line(name, row, time.perf_counter() - start), file=sys.stderr, flush=True)
        rows.append(row)
    *drawn, large = rows
    cap = board.device.resources
    return {"method": __doc__.split("\n\n")[0].replace("\n", " ") + " " + __doc__.split("\n\n")[1].replace("\n", " "),
            "board": board.name, "part": board.part, "limits": limits(cap), "seed": SEED,
            "yosys": "synth_xilinx 0.70 (hwgen.estimate.resources)",
            # Yosys' own time for these designs, as recorded when each was synthesized (a cached rerun skips it)
            "yosys_seconds_total": round(sum(r["yosys_seconds"] for r in rows), 1),
            "designs": drawn, "summary": summary(drawn), "large": large,
            "target_all_fit_with_large": summary(drawn)["target"]["all_fit"] and large["fits"]}


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
