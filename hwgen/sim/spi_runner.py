"""Simulate the SPI-wrapped accelerator (``hwgen_spi_top``) with the reference host driver on its pins.

:func:`simulate_spi` lowers the graph, wraps it in :class:`hwgen.hw.spi.SpiHostLink`, emits Verilog, builds
it (cached by Verilog text, as :mod:`hwgen.sim.runner` does) and runs :mod:`hwgen.testbenches.tb_spi` (source
``sim/tb_spi.py``): every window goes through ``HwgenSpi.infer`` bit-banged at SCLK = clk / ``sclk_divider``,
then the protocol's error and abort cases run. Outputs are compared with ``hwgen.golden.run`` using ``==``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwgen.datafiles import testbench_module
from hwgen.errors import HwgenError
from hwgen.sim.runner import (
    ICARUS_ARGS,
    TIMESCALE,
    VERILATOR_ARGS,
    _check_simulator,
    _first_error,
    _drop_private_copy,
    _private_copy,
    _runner,
    _tool_env,
)

TOPLEVEL = "hwgen_spi_top"
TB_NAME = "tb_spi"  # the testbench module hwgen.testbenches.tb_spi (source: sim/tb_spi.py)
CLOCK_MHZ = 100.0


@dataclass(frozen=True)
class SpiSimResult:
    """What one SPI simulation measured (cycles are system clock cycles at 100 MHz)."""

    simulator: str
    windows: int
    mismatches: int
    first_mismatch: dict | None
    sclk_divider: int
    spi_cycles_per_inference: tuple[float, int, int] | None  # (mean, min, max): first CS_n fall of WRITE_INPUT
    #                                                          to the last CS_n rise of READ_OUTPUT
    busy_cycles: tuple[float, int, int] | None  # (mean, min, max) busy pin high time
    spi_bytes_per_inference: int | None
    commands_per_inference: list[int] = field(default_factory=list)  # of the first window
    busy_ok: bool = False  # busy rose during every START and fell before every READ_OUTPUT
    protocol_checks: dict = field(default_factory=dict)  # name -> passed
    error: str | None = None
    verilog: Path | None = None
    sim_cycles: int = 0
    sim_cycles_per_s: float | None = None
    build_s: float = 0.0
    wall_s: float = 0.0
    run_dir: Path | None = None  # kept when something failed

    @property
    def sclk_mhz(self) -> float:
        return CLOCK_MHZ / self.sclk_divider

    @property
    def passed(self) -> bool:
        return (self.error is None and self.mismatches == 0 and self.busy_ok and bool(self.protocol_checks)
                and all(self.protocol_checks.values()))


def emit_spi_verilog(graph, path: str | os.PathLike, parallel: int = 1) -> Path:
    """Write the Verilog of ``SpiHostLink(lower(graph, parallel))`` (module ``hwgen_spi_top``) to ``path``."""
    from hwgen.hw import emit_verilog, lower
    from hwgen.hw.spi import SpiHostLink

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(emit_verilog(SpiHostLink(lower(graph, parallel=parallel)), name=TOPLEVEL))
    return path


def simulate_spi(graph, windows: np.ndarray, build_dir: str | os.PathLike = "build/sim_spi", parallel: int = 1,
                 simulator: str = "verilator", sclk_divider: int = 8, seed: int = 0) -> SpiSimResult:
    """Run ``windows`` (a batch of the graph's input shape, or one window) through the SPI-wrapped design
    with the reference driver and compare with ``hwgen.golden.run``. Mismatches and failed checks are
    reported in the result, not raised; HwgenError for a build failure or a run that wrote no results."""
    from hwgen.golden import run as golden_run

    wall0 = time.perf_counter()
    simulator = _check_simulator(simulator)
    if not isinstance(sclk_divider, int) or sclk_divider < 2 or sclk_divider % 2:
        raise HwgenError(f"sclk_divider must be an even int >= 2, not {sclk_divider!r}")
    in_shape = tuple(graph.input_type.shape)
    windows = np.asarray(windows)
    batch = windows.reshape(-1, *in_shape) if windows.ndim == len(in_shape) + 1 else windows[None]
    expected = np.asarray(golden_run(graph, batch))
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    verilog = emit_spi_verilog(graph, build_dir / f"{TOPLEVEL}-p{parallel}.v", parallel)
    sim_build = _build(simulator, verilog, build_dir)
    build_s = time.perf_counter() - t0

    run_dir = Path(tempfile.mkdtemp(prefix=f"spi-{simulator}-", dir=build_dir))
    case, results = run_dir / "case.npz", run_dir / "results.json"
    din, dout = graph.input_type.dtype, graph.output_type.dtype
    np.savez(case, inputs=batch.reshape(batch.shape[0], -1).astype(np.int64),
             expected=expected.reshape(batch.shape[0], -1).astype(np.int64), seed=np.int64(seed),
             sclk_divider=np.int64(sclk_divider), in_bits=np.int64(din.bits), out_bits=np.int64(dout.bits),
             in_signed=np.bool_(din.signed), out_signed=np.bool_(dout.signed),
             n_in=np.int64(math.prod(in_shape)), n_out=np.int64(math.prod(graph.output_type.shape)))
    tb_module = testbench_module(TB_NAME)
    try:
        with _tool_env():
            try:
                _runner(simulator).test(test_module=tb_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                                        build_dir=sim_build, test_dir=run_dir,
                                        results_xml=str(run_dir / "results.xml"), seed=seed,
                                        log_file=run_dir / "sim.log",
                                        extra_env={"HWGEN_SIM_CASE": str(case), "HWGEN_SIM_RESULTS": str(results)})
            except (SystemExit, RuntimeError):
                pass  # a failing cocotb test: the results JSON says what happened
    except BaseException:  # interrupted: no half-run folder left behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not results.is_file():
        log = run_dir / "sim.log"
        raise HwgenError(f"{simulator} run of {verilog} wrote no results ({_first_error(log)}): see {log}")
    res = json.loads(results.read_text())
    inf, proto = res.get("inference", {}), res.get("protocol", {})
    detail = inf.get("windows_detail") or []

    def stats(key):
        vals = [w[key] for w in detail if w.get(key) is not None]
        return (float(np.mean(vals)), int(min(vals)), int(max(vals))) if vals else None

    errors = [e for e in (inf.get("error"), proto.get("error")) if e]
    if "mismatches" not in inf:
        errors.append(f"the inference test stopped early: see {run_dir / 'sim.log'}")
    checks = proto.get("checks", {})
    if not checks:
        errors.append(f"the protocol test stopped early: see {run_dir / 'sim.log'}")
    result = SpiSimResult(
        simulator=simulator,
        windows=int(inf.get("windows", batch.shape[0])),
        mismatches=int(inf.get("mismatches", batch.shape[0] * expected[0].size)),
        first_mismatch=inf.get("first_mismatch"),
        sclk_divider=sclk_divider,
        spi_cycles_per_inference=stats("spi_cycles"),
        busy_cycles=stats("busy_cycles"),
        spi_bytes_per_inference=detail[0]["spi_bytes"] if detail else None,
        commands_per_inference=detail[0]["commands"] if detail else [],
        busy_ok=bool(detail) and all(w["busy_ok"] for w in detail),
        protocol_checks=checks,
        error="; ".join(errors) or None,
        verilog=verilog,
        sim_cycles=int(inf.get("sim_cycles", 0)),
        sim_cycles_per_s=inf.get("sim_cycles_per_s"),
        build_s=build_s,
        wall_s=time.perf_counter() - wall0,
        run_dir=run_dir,
    )
    if result.passed:
        shutil.rmtree(run_dir, ignore_errors=True)
        result = SpiSimResult(**{**result.__dict__, "run_dir": None})
    return result


def _build(simulator: str, verilog: Path, build_dir: Path) -> Path:
    """The simulator build of ``verilog``, reused when the same text was built before in ``build_dir``."""
    text = verilog.read_text()
    key = hashlib.sha256("\0".join([simulator, text, repr(VERILATOR_ARGS), repr(ICARUS_ARGS),
                                    repr(TIMESCALE)]).encode()).hexdigest()[:16]
    final = build_dir / f"{simulator}-spi-{key}"
    if (final / ".complete").is_file():
        return final
    source = _private_copy(text, final.name, build_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=build_dir))
    log = tmp / "build.log"
    args = list(VERILATOR_ARGS if simulator == "verilator" else ICARUS_ARGS)
    try:
        with _tool_env():
            try:
                _runner(simulator).build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=tmp, build_args=args,
                                         timescale=TIMESCALE, log_file=log, always=True)
            except (RuntimeError, SystemExit) as exc:
                kept = build_dir / f"{final.name}.failed.log"
                if log.is_file():
                    shutil.copyfile(log, kept)
                first = _first_error(kept).replace(str(source), str(verilog)) or str(exc)
                raise HwgenError(f"{simulator} build of {verilog} failed ({first}): see {kept}") from None
        (tmp / ".complete").write_text(f"{verilog}\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first
            if not (final / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not (final / ".complete").is_file():  # a failed build leaves only its log
            _drop_private_copy(source)
    return final
