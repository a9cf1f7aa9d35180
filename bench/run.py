"""`make bench`: run the benchmarks and write their JSON into bench/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from hwgen.steps.flow import write_json

SECTIONS = ["accuracy", "hardware", "target", "quantization"]
SECTIONS.append("impl")  # about 10 minutes: nextpnr on the shipped models (ECP5, iCE40)
SECTIONS.append("sim_all")  # about 2-3 minutes: every PM2.5 test window (7,931) through the W8 Verilog
SECTIONS.append("search")  # about 20 minutes: a 15-minute, 2-worker PM2.5 search, then 2 Pareto points verified
# the resource model against Yosys on 10 random held-out architectures at 2-3 parallelisms and the 2-layer
# d_model-32 W4 model: about 30 minutes of Yosys, or seconds with the counts cached by Verilog hash
SECTIONS.append("resources_model")
# how many of 30 random configurations of the search space (4, 6, 8 bits) and the 2-layer d_model-32 W4
# model fit the XC7S15 at --parallel auto, by Yosys: about 35 minutes (31 Yosys runs), 84-136 s with the
# counts cached by Verilog hash
SECTIONS.append("fit")
RESULTS = Path("bench/results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help=f"comma-separated sections ({', '.join(SECTIONS)})")
    args = parser.parse_args(argv)
    sections = args.only.split(",") if args.only else SECTIONS
    import torch

    torch.set_num_threads(1)  # as the CLI's torch commands: 2 cores, oversubscribed OpenMP threads spin
    for name in sections:
        if name not in SECTIONS:
            print(f"bench: error: unknown section {name!r} (known: {', '.join(SECTIONS)})", file=sys.stderr)
            return 1
        start = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        result = importlib.import_module(f"bench.{name}").run()
        result["bench_seconds"] = round(time.perf_counter() - start, 1)
        write_json(RESULTS / f"{name}.json", result)
        print(json.dumps(result, indent=2)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
