"""`hwgen build` and `hwgen sim`: a build folder with Verilog, the integer graph and report.json."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hwgen import jsonio, progress
from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph
from hwgen.ops import macs

TOP_NAME = "hwgen_top"
SPI_TOP_NAME = "hwgen_spi_top"
DESIGN_FILE = "design.json"  # the Design of the build: lanes, chains, memory plan, schedule, models


def say(message: str) -> None:
    """Progress on stderr (stdout stays for results); silent under --quiet."""
    if not progress.is_quiet():
        print(message, file=sys.stderr, flush=True)


MARKER = ".hwgen-build"  # written into every build folder: only such a folder is replaced by a new build
MARKER_FORMAT = "hwgen-build-folder format 1"
HASHED = ("graph.json", "consts.npz")  # the build's graph, hashed into the marker at build time


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_marker(folder: Path) -> None:
    """The build marker: its format line, then ``sha256 NAME`` of each file of the graph."""
    lines = [MARKER_FORMAT] + [f"{_sha256(folder / n)} {n}" for n in HASHED if (folder / n).is_file()]
    (Path(folder) / MARKER).write_text("\n".join(lines) + "\n")


def check_graph_unchanged(build_dir: Path) -> None:
    """HwgenError naming the file when graph.json or consts.npz no longer match what the build wrote (a folder
    without a marker, from an older hwgen, is not checked)."""
    marker = Path(build_dir) / MARKER
    if not marker.is_file():
        return
    lines = marker.read_text().splitlines()
    if not lines or lines[0] != MARKER_FORMAT:
        raise HwgenError(f"{marker}: not a build marker of this hwgen (rebuild with 'hwgen build')")
    for line in lines[1:]:
        digest, _, name = line.partition(" ")
        path = Path(build_dir) / name
        if not path.is_file() or _sha256(path) != digest:
            raise HwgenError(f"{path}: changed since 'hwgen build' wrote it (the Verilog was built from the "
                             "original; rebuild with 'hwgen build')")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(out: Path, inputs: tuple[str | os.PathLike, ...] = (), force: bool = False) -> None:
    """HwgenError unless ``out`` may become a build folder: absent, empty, or a previous build folder (its
    marker); any other folder with ``force`` only; never a regular file, the current folder or one of its
    parents, nor a folder holding one of ``inputs``."""
    out = Path(out)
    real = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise HwgenError(f"{out}: exists and is not a folder (give a new or previous build folder)")
    for parent in out.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise HwgenError(f"{out}: its parent {parent} is not a folder")
        if parent.is_dir():
            break
    if _inside(cwd, real):
        raise HwgenError(f"{out}: is the current folder or holds it (give a folder for the build)")
    for source in inputs:
        if _inside(Path(os.path.realpath(source)), real):
            raise HwgenError(f"{out}: holds the input {source} (a build replaces its folder whole; "
                             "give another --out)")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()) and not force:
        raise HwgenError(f"{out}: exists and is not a hwgen build folder (no {MARKER}); give another --out, "
                         "or --force to replace it whole")


def _normal_mode(path: Path) -> None:
    """A folder from mkdtemp (0700) gets the mode a plain mkdir gives (0755 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


@contextmanager
def staged_folder(out: Path, inputs: tuple[str | os.PathLike, ...] = (), force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` whole, on failure it is
    removed, so ``out`` is never half-written. ``out`` is checked with ``check_out`` (a previous build
    folder, carrying ``MARKER``, is replaced; anything else only with ``force``); the new folder gets the
    marker."""
    out = Path(out)
    check_out(out, inputs, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HwgenError(f"{out}: cannot create its parent folder ({exc.strerror})") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    _normal_mode(tmp)
    try:
        yield tmp
        write_marker(tmp)
        check_out(out, inputs, force)  # again: it may have changed while building
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_report(build_dir: Path) -> dict[str, Any]:
    path = Path(build_dir) / "report.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HwgenError(f"{path}: corrupt report ({exc})") from None


def write_report(build_dir: Path, report: dict[str, Any]) -> None:
    path = Path(build_dir) / "report.json"
    tmp = path.with_name(".report.json.tmp")
    tmp.write_text(jsonio.dumps(report, str(path), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextmanager
def report_lock(build_dir: Path) -> Iterator[None]:
    """An exclusive lock on the build folder's report (``.report.lock``, fcntl.flock): concurrent
    ``hwgen sim``/``estimate``/``vivado`` update their own sections without losing the others'."""
    import fcntl

    fd = os.open(Path(build_dir) / ".report.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_report(build_dir: Path, sections: dict[str, Any]) -> dict[str, Any]:
    """Set ``sections`` of report.json: re-read under the lock, the other sections kept, written atomically."""
    with report_lock(build_dir):
        report = read_report(build_dir)
        report.update(sections)
        write_report(build_dir, report)
    return report


def model_section(graph: Graph) -> dict[str, Any]:
    cfg = dict(graph.meta.get("config", {}))
    data = dict(graph.meta.get("data", {}))
    return {
        "name": graph.meta.get("model"),
        "task": graph.meta.get("task", "forecast"),
        "dataset": data.get("title") or data.get("name"),
        "window": graph.input_type.shape[0],  # input steps (a forecasting anomaly detector's: window + horizon)
        "features": graph.input_type.shape[1],
        **({"horizon": cfg["horizon"]} if cfg.get("horizon") else {}),
        "d_model": cfg.get("d_model"),
        "heads": cfg.get("heads"),
        "layers": cfg.get("layers"),
        "bits_w": cfg.get("bits_w"),
        "bits_a": cfg.get("bits_a"),
        "macs": int(sum(macs(graph, n) for n in graph.nodes)),
    }


def load_build(build_dir: str | os.PathLike) -> Graph:
    """The graph of a build folder (HwgenError if the folder or its graph is missing)."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise HwgenError(f"{build_dir}: build folder not found (run 'hwgen build' first)")
    if not (build_dir / "graph.json").is_file():
        raise HwgenError(f"{build_dir}: no graph.json in the folder (not a build folder from 'hwgen build')")
    check_graph_unchanged(build_dir)
    return Graph.load(build_dir)


def graph_from(source: str | os.PathLike, class_scores: bool = True) -> tuple[Graph, dict[str, Any]]:
    """A graph from a QAT checkpoint (.pt, exported now; a classifier returns its scores after the class
    index when ``class_scores``) or an exported/build folder; plus what is known about the model's accuracy
    (from the checkpoint's evaluation, when it is a checkpoint)."""
    source = Path(source)
    if source.is_dir():
        if not class_scores:
            raise HwgenError(f"{source}: an exported graph's outputs are fixed; give the checkpoint to return "
                             "the class index alone")
        return load_build(source) if (source / "graph.json").is_file() else Graph.load(source), {}
    from hwgen.steps import flow  # torch is only needed for checkpoints

    model, meta = flow.load_checkpoint(source)
    graph = flow.export_model(model, {"model": source.name, "data": meta["data"]}, class_scores)
    return graph, {"checkpoint": str(source)}


def accuracy_section(checkpoint: str) -> dict[str, Any]:
    """FP32 and deployed-integer test MSE of a checkpoint (normalised and in the data's units)."""
    from hwgen.steps import flow

    result = flow.evaluate(checkpoint, "test")
    if result.get("task", "forecast") != "forecast":  # classify / anomaly: that task's metrics
        return {k: result[k] for k in ("task", "windows", "fp32", "fake_quant", "integer") if k in result}
    section = {"fp32_test_mse": result["fp32"]["mse"], "fp32_test_mse_units": result["fp32"]["mse_units"]}
    if "integer" in result:
        section.update(int_test_mse=result["integer"]["mse"], int_test_mse_units=result["integer"]["mse_units"],
                       fake_quant_test_mse=result["fake_quant"]["mse"],
                       fake_quant_test_mse_units=result["fake_quant"]["mse_units"],
                       fake_quant_vs_integer=result["fake_quant_vs_integer"])
    return section


def build(source: str, out: str, board_name: str = "xc7s15", parallel: str | int = "auto",
          with_accuracy: bool = True, class_scores: bool = True, force: bool = False) -> dict[str, Any]:
    """Lower a model to Verilog in ``out``: rtl/hwgen_top.v, graph.json + consts.npz, report.json.

    ``parallel`` is the number of multipliers (an integer >= 1) or "auto" (the fastest that fits the part).
    Returns the report. Nothing is left in ``out`` if any step fails. ``out`` may be new, empty or a previous
    build folder; ``force`` also replaces another folder (never one holding ``source``) and builds a
    ``parallel`` the resource model predicts not to fit.
    """
    from hwgen.codegen.vivado import write_vivado_project
    from hwgen.estimate.boards import resolve_target
    from hwgen.estimate.latency import estimate as latency_estimate
    from hwgen.estimate.model import predict
    from hwgen.hw import Top, build_design, emit_verilog
    from hwgen.hw.spi import SpiHostLink
    from hwgen.hw.vendor import lowering_options

    t0 = time.perf_counter()
    check_out(Path(out), (source,), force)
    board = resolve_target(board_name)
    graph, origin = graph_from(source, class_scores)
    p, chosen = settle_parallel(graph, board, parallel, force)
    options = {**lowering_options(board.device.yosys_family), **chosen}
    say(f"build: lowering {len(graph.nodes)} nodes with {p} multipliers for {board.part}")
    with progress.step("build: lowering and emitting Verilog"):
        design = build_design(graph, p, dsp_budget=_dsp_budget(board), **options)  # the one Design of this build
        verilog = emit_verilog(Top(design), name=TOP_NAME)
        lat = latency_estimate(design)
    paired = [node.name for i, node in enumerate(graph.nodes) if design.paired(i)]
    if paired:
        say(f"build: two rows at a time through each multiplier in {', '.join(paired)}")
    if design.distributed_buffers:
        say(f"build: block RAM is short: {len(design.distributed_buffers)} activation buffer(s) in distributed "
            f"RAM ({', '.join(f'buf{b}' for b in sorted(design.distributed_buffers))})")
    report: dict[str, Any] = {
        "model": model_section(graph),
        "hardware": {
            "board": board.name,
            "part": board.part,
            "clock_mhz": board.clock_mhz,
            "parallel": p,
            "latency_cycles": int(lat["total"]),
            "latency_us": lat["total"] / board.clock_mhz,
            # windows streamed back to back: the next one's input is taken while this one computes
            "throughput_cycles": int(lat["throughput_cycles"]),
            "inferences_per_second": board.clock_mhz * 1e6 / lat["throughput_cycles"],
            "cycles_model": "analytic (hwgen.estimate.latency)",
            "dsp_bound_cycles": -(-int(lat["macs"]) // board.device.resources.dsp),
            "cycles_per_node": {k: int(v) for k, v in lat["nodes"].items()},
        },
    }
    if with_accuracy and "checkpoint" in origin:
        say("build: scoring the deployed integer model on the test split")
        with progress.step("build: scoring FP32, fake-quant and integer models"):
            report["accuracy"] = accuracy_section(origin["checkpoint"])
    say("build: wrapping it in the SPI host link for the board")
    with progress.step("build: emitting the SPI host link"):
        spi_verilog = emit_verilog(SpiHostLink(Top(design)), name=SPI_TOP_NAME)
    design_record = {**design.summary(), "latency": lat, "resources_model": predict(design)}
    with staged_folder(Path(out), (source,), force) as tmp:
        (tmp / DESIGN_FILE).write_text(jsonio.dumps(design_record, DESIGN_FILE, indent=2, sort_keys=True) + "\n")
        (tmp / "rtl").mkdir()
        (tmp / "rtl" / f"{TOP_NAME}.v").write_text(verilog)
        (tmp / "rtl" / f"{SPI_TOP_NAME}.v").write_text(spi_verilog)
        graph.save(tmp)
        if board.device.open_flow:  # ECP5, iCE40, Gowin: no Vivado; `hwgen impl` places and routes it
            report["open_flow"] = {"top": SPI_TOP_NAME, "command": f"hwgen impl {out}"}
        else:
            write_vivado_project(tmp, [tmp / "rtl" / f"{SPI_TOP_NAME}.v"], board, top=SPI_TOP_NAME)
            report["vivado"] = {"folder": "vivado", "top": SPI_TOP_NAME, "command": "cd vivado && ./build.sh"}
        write_report(tmp, report)
    say(f"build: wrote {out} in {time.perf_counter() - t0:.1f} s "
        f"({lat['total']} cycles = {lat['total'] / board.clock_mhz:.1f} us at {board.clock_mhz:g} MHz; "
        f"back to back one window per {lat['throughput_cycles']} cycles)")
    return report


def _dsp_budget(board) -> int:
    """The DSPs (hard multipliers) a build for ``board`` may give its lanes and rescale products."""
    if board.device.open_flow:
        from hwgen.estimate.family_model import dsp_budget

        return dsp_budget(board)
    return int(board.device.resources.dsp)


def candidate(graph: Graph, board, p: int) -> tuple[Any, dict[str, float]]:
    """The design a build for xc7 ``board`` makes at ``p`` lanes, lowered without ROM images, and its
    resource prediction: products two rows at a time where the family pairs them (``lowering_options``) and
    they pair (``MatmulUnit.arrange``) if that design fits by the resource model (a second accumulator per
    lane), else every row alone; where only block RAM is short, each of the two first with the activation
    buffers cheapest in LUTs per block RAM freed asked into distributed RAM (``relieve_bram``)."""
    from hwgen.estimate.model import fits, predict
    from hwgen.hw import build_design
    from hwgen.hw.vendor import lowering_options

    cap = board.device.resources
    pair_rows = bool(lowering_options(board.device.yosys_family)["pair_rows"])
    design = build_design(graph, p, images=False, dsp_budget=int(cap.dsp), pair_rows=pair_rows)
    need = predict(design)
    if not fits(need, cap):
        design, need = relieve_bram(design, need, cap)
    if any(design.paired(i) for i in range(len(graph.nodes))) and not fits(need, cap):
        design = build_design(graph, p, images=False, dsp_budget=int(cap.dsp), pair_rows=False)
        need = predict(design)
        if not fits(need, cap):
            design, need = relieve_bram(design, need, cap)
    return design, need


def relieve_bram(design, need: dict[str, float], cap) -> tuple[Any, dict[str, float]]:
    """``design`` (and ``need``, its prediction) with flat activation buffers moved from block RAM into
    distributed RAM, the fewest LUTs per BRAM36 freed first (``hwgen.estimate.memmap`` maps each both ways),
    until the block RAM fits ``cap``; unchanged unless block RAM is all that is short and the moved design
    fits by the resource model."""
    from dataclasses import replace

    from hwgen.estimate.memmap import map_memory
    from hwgen.estimate.model import LUT_MARGIN, fits, memories, predict
    from hwgen.hw import build_design

    others = need["lut"] <= LUT_MARGIN * cap.lut and need["ff"] <= cap.ff and need["dsp"] <= cap.dsp
    if not design.lutram or need["bram36"] <= cap.bram36 or not others:
        return design, need
    moves = []
    for mem, mp in memories(design):
        if not mem.name.startswith("buf") or not mp.bram36:
            continue
        lut = map_memory(replace(mem, distributed=True))
        if lut is not None and lut.kind.startswith("LUTRAM"):
            moves.append((lut.lutram_luts / mp.bram36, int(mem.name[3:]), mp.bram36))
    chosen, freed = set(design.distributed_buffers), 0.0
    for _, b, bram in sorted(moves):
        if need["bram36"] - freed <= cap.bram36:
            break
        chosen.add(b)
        freed += bram
    if need["bram36"] - freed > cap.bram36:
        return design, need
    moved = build_design(design.graph, design.lanes, images=False, dsp_budget=int(cap.dsp),
                         pair_rows=design.pair_rows, distributed_buffers=frozenset(chosen))
    moved_need = predict(moved)
    return (moved, moved_need) if fits(moved_need, cap) else (design, need)


def build_options(design) -> dict[str, Any]:
    """The ``build_design`` options that lower a graph again to ``design`` (a ``candidate``'s choices)."""
    return {"pair_rows": design.pair_rows, "distributed_buffers": design.distributed_buffers}


def settle_parallel(graph: Graph, board, parallel: str | int, force: bool = False) -> tuple[int, dict[str, Any]]:
    """``choose_parallel`` and the ``build_design`` options of the build at that parallelism (its
    ``candidate``'s choices: row pairs, buffers in distributed RAM; none on an open-flow part), each
    candidate lowered once."""
    if board.device.open_flow:  # ECP5, iCE40, Gowin: the family-aware check (hwgen.estimate.family_model)
        from hwgen.estimate.family_model import choose_parallel_family

        return choose_parallel_family(graph, board, parallel, force), {}
    if parallel == "auto":
        p, (design, _) = _auto(graph, board)
        return p, build_options(design)
    dsp = int(board.device.resources.dsp)
    try:
        p = int(parallel)
    except (TypeError, ValueError):
        raise HwgenError(f"--parallel must be a positive integer or 'auto', not {parallel!r}") from None
    if p < 1:
        raise HwgenError(f"--parallel must be >= 1, not {p}")
    if p > dsp:
        raise HwgenError(f"--parallel {p} exceeds the {dsp} DSP48E1 of {board.part}")
    design, need = candidate(graph, board, p)
    if not force:
        from hwgen.estimate.model import LUT_MARGIN

        cap = board.device.resources
        over = [f"{need[k]:.0f} {k.upper()} predicted, {limit:g} available" for k, limit in
                (("lut", LUT_MARGIN * cap.lut), ("ff", cap.ff), ("dsp", cap.dsp), ("bram36", cap.bram36))
                if need[k] > limit]
        if over:
            raise HwgenError(f"--parallel {p} does not fit {board.part} by hwgen's resource model: "
                             + "; ".join(over) + " (--force builds it anyway)")
    return p, build_options(design)


def choose_parallel(graph: Graph, board, parallel: str | int, force: bool = False) -> int:
    """Resolve --parallel: an integer within the part's DSPs whose design the resource model predicts to fit
    (any, with ``force``), or "auto"."""
    return settle_parallel(graph, board, parallel, force)[0]


def auto_parallel(graph: Graph, board) -> int:
    """The fastest parallelism that fits the part by the resource model (``hwgen.estimate.model``: DSPs as
    Yosys synth_xilinx maps them, LUTs within ``LUT_MARGIN``, flip-flops, BRAM); the fewest lanes among
    equally fast ones. Each parallelism with its rows paired where that design fits (``candidate``),
    else one row at a time. Each candidate is lowered without its ROM images; the resource model lowers it
    again with them (Yosys drops a ROM's constant columns) and elaborates its top level (about 0.1-0.5 s
    per candidate)."""
    return _auto(graph, board)[0]


def _auto(graph: Graph, board) -> tuple[int, tuple[Any, dict[str, float]]]:
    """``auto_parallel`` and the chosen parallelism's ``candidate``."""
    from hwgen.estimate.latency import estimate as latency_estimate
    from hwgen.estimate.model import fits

    cap = board.device.resources
    candidates = {p: candidate(graph, board, p) for p in range(1, int(cap.dsp) + 1)}
    fitting = [p for p, (_, need) in candidates.items() if fits(need, cap)]
    if not fitting:
        need = candidates[1][1]
        raise HwgenError(f"even one multiplier lane does not fit {board.part}: predicted {need['lut']:.0f} LUT, "
                         f"{need['dsp']} DSP, {need['bram36']:.1f} BRAM36 (capacity {cap.lut} LUT, {cap.dsp} DSP, "
                         f"{cap.bram36} BRAM36)")
    p = min(fitting, key=lambda p: (latency_estimate(candidates[p][0])["total"], p))
    return p, candidates[p]


def _idle_timeout(hardware: dict[str, Any]) -> int:
    """Cycles without stream progress before a simulation gives up: an inference of a slow design (one MAC
    lane, a long window) computes for longer than the default 100,000 cycles between its input and output."""
    latency = int(hardware.get("latency_cycles") or 0)
    return max(100_000, 4 * latency)


def read_design(build_dir: Path) -> dict[str, Any] | None:
    """The build's ``design.json`` (None when the folder has none: built by an older hwgen)."""
    path = Path(build_dir) / DESIGN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HwgenError(f"{path}: corrupt design record ({exc})") from None


def step_latency(design: dict[str, Any], step_cycles: dict[int, tuple[float, int, int]],
                 model_nodes: dict[str, int]) -> list[dict[str, Any]]:
    """Simulated cycles of the controller's node steps, named by their nodes (a node chained to its producer
    runs in the producer's step, as the build's ``design.json`` records), beside the analytic model's cycles
    of the same nodes."""
    steps = {s["step"]: s["nodes"] for s in design["steps"]}
    first = min(steps, default=None)
    rows = []
    for step, (mean, lo, hi) in sorted(step_cycles.items()):
        names = steps.get(step, [])
        model = sum(model_nodes[n] for n in names) if names and all(n in model_nodes for n in names) else None
        row = {"step": step, "nodes": names, "cycles": mean, "min": lo, "max": hi, "model": model}
        if design.get("load_with_first_node") and step == first:
            # it takes the input as it arrives: its cycles wait on the stream (as a load step's do), and the
            # model's count from the first input beat of a window alone
            row.update(model=None, waits_on_input=True, model_from_first_input_beat=model)
        rows.append(row)
    return rows


def simulate_build(build_dir: str, simulator: str = "verilator", windows: int | None = 256, stall: float = 0.0,
                   seed: int = 0, inputs=None) -> dict[str, Any]:
    """Run the build's Verilog under cocotb on ``windows`` real test windows (None: the whole test split), or
    on ``inputs`` (the input integers of windows the caller gives, one window or a batch), compare with the
    golden model (==), write ``sim`` into report.json. Returns the sim section; raises HwgenError on any mismatch."""
    from hwgen import tasks
    from hwgen.host.quantize import quantize_input
    from hwgen.sim.runner import SIMULATORS, simulate

    if simulator not in SIMULATORS:
        raise HwgenError(f"unknown simulator {simulator!r} (supported: {', '.join(SIMULATORS)})")
    build_dir = Path(build_dir)
    graph = load_build(build_dir)
    report = read_report(build_dir)
    hardware = report.get("hardware") or {}
    verilog = build_dir / "rtl" / f"{TOP_NAME}.v"
    if inputs is not None:
        import numpy as np

        xi = np.asarray(inputs)
        if xi.dtype.kind not in "iu":
            raise HwgenError(f"inputs: must be the input integers, not {xi.dtype} (quantize them first)")
        xi = xi[None] if xi.ndim == len(graph.input_type.shape) else xi
    else:
        if "data" not in graph.meta:
            raise HwgenError(f"{build_dir}: the graph names no dataset to take test windows from "
                             "(give the windows: hwgen sim --inputs FILE.npy, or Accelerator.simulate(windows))")
        data = tasks.reload_data(graph.meta["data"])
        x = data.test.x if windows is None else data.test.x[:windows]
        if windows is not None and len(x) < windows:
            say(f"sim: only {len(x)} test windows exist; simulating those")
        xi = quantize_input(x, graph.meta["input_scale"], graph.input_type.dtype.bits)
    say(f"sim: {simulator}: {len(xi)} windows through {verilog} (stall probability {stall})")
    with progress.step(f"sim: {simulator}", total=len(xi), unit="windows") as pbar:
        def advance(stage: str, done: int) -> None:
            pbar.set_description_str(f"sim: {simulator}: " + ("compiling" if stage == "build" else "simulating"))
            pbar.n = done
            pbar.refresh()

        res = simulate(verilog, graph, xi, simulator=simulator, build_dir=build_dir / "sim_build", seed=seed,
                       stall_in=stall, stall_out=stall, progress=advance if progress.enabled() else None,
                       idle_timeout_cycles=_idle_timeout(hardware))
    cpi = res.cycles_per_inference
    design = read_design(build_dir)
    per_step = (step_latency(design, res.step_cycles, hardware.get("cycles_per_node") or {})
                if res.step_cycles and design else None)
    section = {
        "simulator": simulator,
        "windows": res.windows,
        "mismatches": res.mismatches,
        "first_mismatch": res.first_mismatch,
        "cycles_per_inference": cpi[0] if cpi else None,
        "cycles_per_inference_min_max": [cpi[1], cpi[2]] if cpi else None,
        # the windows are streamed back to back: the next input is taken while the design computes
        "cycles_between_windows": res.cycles_between_windows[0] if res.cycles_between_windows else None,
        "cycles_between_windows_min_max": list(res.cycles_between_windows[1:]) if res.cycles_between_windows
        else None,
        "cycles_per_step": per_step,
        "stall_probability": stall,
        "sim_cycles_per_s": res.sim_cycles_per_s,
        "wall_s": round(res.wall_s, 2),
        "error": res.error,
    }
    update_report(build_dir, {"sim": section})
    if not res.passed:
        fm = res.first_mismatch or {}
        raise HwgenError(
            f"{res.mismatches} mismatching output elements in {res.windows} windows; first: window "
            f"{fm.get('window')}, element {fm.get('element')}, expected {fm.get('expected')}, got {fm.get('got')}"
            + (f" ({res.error})" if res.error else ""))
    return section


def _board_of(report: dict[str, Any], build_dir: Path):
    from hwgen.estimate.boards import resolve_target

    name = report.get("hardware", {}).get("board")
    if not name:
        raise HwgenError(f"{build_dir}: report.json names no board (rebuild with 'hwgen build')")
    return resolve_target(name)


def estimate_build(build_dir: str) -> dict[str, Any]:
    """Yosys synth_xilinx of the build's Verilog: resources against the part, logic levels, energy.

    Writes ``resources``, ``timing`` and ``energy`` into report.json and prints a table. Raises HwgenError
    naming the resources that do not fit (after writing the report)."""
    from hwgen.estimate.energy import estimate as energy_estimate
    from hwgen.estimate.resources import fit, synthesize
    from hwgen.estimate.timing import METHOD as TIMING_METHOD
    from hwgen.estimate.vivado_reports import parse_build_dir

    build_dir = Path(build_dir)
    graph = load_build(build_dir)
    report = read_report(build_dir)
    board = _board_of(report, build_dir)
    if board.device.open_flow:  # ECP5, iCE40, Gowin: that family's Yosys synthesis (estimate_open)
        return {"resources": estimate_open(build_dir, board)}
    verilog = build_dir / "rtl" / f"{TOP_NAME}.v"
    if not verilog.is_file():
        raise HwgenError(f"{verilog}: missing (rebuild with 'hwgen build')")
    with tempfile.TemporaryDirectory(prefix="synth-", dir=build_dir) as work, \
            progress.step("estimate: yosys synth_xilinx (tens of seconds)"):
        res = synthesize([verilog], TOP_NAME, work, quiet=progress.enabled() or progress.is_quiet())
    fits, problems = fit(res, board)
    cap = board.device.resources
    design = read_design(build_dir)
    if design is None:
        from hwgen.estimate.model import predict_graph

        model = predict_graph(graph, int(report["hardware"]["parallel"]), dsp_budget=int(board.device.resources.dsp))
    else:
        model = design["resources_model"]
    predicted = {k: round(v, 1) for k, v in model.items()}
    report["resources"] = {
        "lut": res["lut"], "ff": res["ff"], "dsp": res["dsp"], "bram36": res["bram36"],
        "lutram_luts": res.get("lutram_luts"), "carry4": res.get("carry4"),
        "fits": fits, "problems": problems, "tool": res["tool"], "part": board.part,
        "capacity": {"lut": cap.lut, "ff": cap.ff, "dsp": cap.dsp, "bram36": cap.bram36},
        "model": predicted,
    }
    sta = res.get("sta") or {}
    report["timing"] = {
        "logic_delay_ns": sta.get("logic_delay_ns"),
        "method": TIMING_METHOD,
        "path_start": sta.get("path_start"),
        "path_end": sta.get("path_end"),
        "path_cells": sta.get("path_cells"),
        "clock_period_ns": 1000.0 / board.clock_mhz,
        "logic_levels": res.get("logic_levels"),
        "logic_levels_method": "yosys ltp: longest register-to-register combinational path in cells after "
                               "synth_xilinx (a proxy: no placement or routing delay; CARRY4 counted as one level)",
        "post_route": post_route_timing(read_report(build_dir)),
    }
    sim_cycles = (report.get("sim") or {}).get("cycles_per_inference")
    cycles = sim_cycles or report["hardware"]["latency_cycles"]
    vivado = parse_build_dir(build_dir / "vivado") if (build_dir / "vivado" / "reports").is_dir() else {}
    energy = energy_estimate(res, int(round(cycles)), board.clock_mhz, part=board.device.name,
                             vivado_power=vivado.get("power"))
    energy["latency_cycles"] = cycles
    energy["latency_source"] = "simulation" if sim_cycles else "analytic model"
    report["energy"] = energy
    report = update_report(build_dir, {k: report[k] for k in ("resources", "timing", "energy")})
    print(f"{'resource':<10}{'used':>9}{'available':>11}{'use':>8}")
    for key in ("lut", "ff", "dsp", "bram36"):
        used, total = res[key], getattr(cap, key)
        print(f"{key:<10}{used:>9g}{total:>11g}{100 * used / total:>7.1f}%")
    print(f"logic delay {sta.get('logic_delay_ns')} ns (yosys sta, routing excluded; clock period "
          f"{1000.0 / board.clock_mhz:g} ns), logic levels {res.get('logic_levels')}; energy {energy['uj_per_inference']:.3f} uJ per "
          f"inference ({energy['method']})")
    for line in open_impl_lines(report):  # `hwgen impl --board ulx3s_85f` results on this build, if any
        print(line)
    if not fits:
        raise HwgenError(f"the design does not fit {board.part}: " + "; ".join(problems))
    return report


def vivado_build(build_dir: str) -> dict[str, Any]:
    """Run the build's Vivado project when Vivado is installed (else print the command), then parse its
    utilisation, timing and power reports into report.json."""
    from hwgen.codegen.vivado import run_vivado

    build_dir = Path(build_dir)
    load_build(build_dir)
    if "open_flow" in read_report(build_dir):  # an ECP5, iCE40 or Gowin board: no Vivado hand-off
        raise HwgenError(f"{build_dir}: built for a board without a Vivado flow; run 'hwgen impl {build_dir}'")
    if not (build_dir / "vivado" / "build.tcl").is_file():
        raise HwgenError(f"{build_dir}: no vivado/build.tcl (rebuild with 'hwgen build')")
    result = run_vivado(build_dir / "vivado")
    if not result.get("ran"):
        return result
    reports = result.get("reports") or {}
    update_report(build_dir, {"vivado_results": {"returncode": result.get("returncode"), **reports}})
    if result.get("returncode"):
        raise HwgenError(f"Vivado failed (exit {result['returncode']}): see {build_dir / 'vivado' / 'vivado.log'}")
    return result


POST_ROUTE_METHOD = ("nextpnr post-route timing of the same Verilog (hwgen impl: Yosys, nextpnr, with its routing) "
                     "on the board it names; for a board of another family than the build's part it shows the "
                     "critical path and its depth, not that part's Fmax")


def post_route_timing(report: dict[str, Any]) -> dict[str, Any]:
    """report.json ``timing.post_route``: per board of ``implementation``, its post-route Fmax, clock, whether
    it was met and the critical path (empty until ``hwgen impl`` has run on the build)."""
    boards = {}
    for name, sec in sorted((report.get("implementation") or {}).items()):
        if sec.get("fmax_mhz"):
            boards[name] = {k: sec.get(k) for k in ("device", "speed", "fmax_mhz", "clock_mhz", "met", "proxy",
                                                    "critical_path")}
    return {"method": POST_ROUTE_METHOD, "boards": boards} if boards else {}


def open_impl_lines(report: dict[str, Any]) -> list[str]:
    """Lines for ``hwgen estimate`` on a Spartan-7 build: the open-flow results recorded in report.json, and
    what they do and do not promise."""
    lines = []
    for name, sec in sorted((report.get("implementation") or {}).items()):
        fmax = sec.get("fmax_mhz") or {}
        if not fmax:
            continue
        f = ", ".join(f"{v:g} MHz" for v in fmax.values())
        lines.append(f"open implementation on {name} ({sec.get('device')}, speed {sec.get('speed')}): post-route "
                     f"Fmax {f}" + (" [proxy: another fabric]" if sec.get("proxy") else ""))
    if lines:
        lines.append("  (nextpnr timing of the same Verilog on another FPGA: it shows where the critical path is "
                     "and how deep it is; it is not the XC7S15's Fmax, whose sign-off is 'hwgen vivado')")
    return lines


def estimate_open(build_dir: Path, board) -> dict[str, Any]:
    """``hwgen estimate`` on a board of an open-flow family: the family's Yosys synthesis of the accelerator
    (rtl/hwgen_top.v), its cell counts against the part (no energy or logic-level figure: those models are
    Xilinx-only), into report.json ``resources``."""
    from hwgen.estimate.openflow import family_of, fit_problems, synthesize_family

    fam = family_of(board)
    verilog = build_dir / "rtl" / f"{TOP_NAME}.v"
    if not verilog.is_file():
        raise HwgenError(f"{verilog}: missing (rebuild with 'hwgen build')")
    say(f"estimate: yosys {fam.synth} of {TOP_NAME} (the accelerator without the host link)")
    with tempfile.TemporaryDirectory(prefix="synth-", dir=build_dir) as work:
        counts = synthesize_family([verilog], TOP_NAME, work, fam, netlist=False)
    problems = fit_problems(counts, board)
    cap = board.resources
    section = {
        "lut": counts["lut"], "ff": counts["ff"], "dsp": counts["dsp"], "bram": counts["bram"],
        "carry": counts["carry"], "fits": not problems, "problems": problems, "tool": counts["tool"],
        "part": board.part, "family": fam.name,
        "units": {"lut": "LUT4", "dsp": fam.multiplier, "bram": f"{fam.bram} ({cap.bram_block_kbit:g} Kb)"},
        "capacity": {"lut": cap.lut, "ff": cap.ff, "dsp": cap.dsp, "bram": cap.bram_blocks},
        "note": "Yosys counts of the family's cells; no energy or logic-level figure for this family "
                "(those models are Xilinx-only); 'hwgen impl' places, routes and times it",
    }
    update_report(build_dir, {"resources": section})
    print(f"{'resource':<12}{'used':>9}{'available':>11}{'use':>8}")
    for key, unit in (("lut", "LUT4"), ("ff", "FF"), ("dsp", fam.multiplier), ("bram", fam.bram)):
        used, total = section[key], section["capacity"][key]
        print(f"{unit:<12}{used:>9g}{total:>11g}{100 * used / total if total else 0:>7.1f}%")
    print(f"({counts['tool']}; energy and logic levels are modelled for Xilinx parts only)")
    if problems:
        raise HwgenError(f"the design does not fit {board.part}: " + "; ".join(problems))
    return section
