"""`hwgen impl`: synthesis, place and route, post-route timing and a bitstream with open tools.

What is implemented: the build's board top, ``rtl/hwgen_spi_top.v`` (the accelerator behind the SPI host
link), with the board's pins; when the board lacks a pin the top has (no reset button, fewer LEDs), the
small board top of the Vivado hand-off (``hwgen.codegen.vivado.plan_board_io``, ``board_top.v.j2``) adapts
it, with a power-on reset. The clock target is the board's clock (``--clock-mhz`` asks for another; the
design runs from the board clock directly, no PLL is generated).

``--board`` implements the same Verilog on another board than the build's. On a Spartan-7 build folder
``--board ulx3s_85f`` (an ECP5) is the proxy the README describes: the same RTL placed, routed and timed
by open tools on another fabric, recorded with ``proxy: true``; it does not time the XC7S15 (Vivado is its
sign-off). Each run writes ``DIR/impl/<board>/`` (pin file, logs, nextpnr's report, the bitstream), replaced
whole, and the section ``implementation.<board>`` of report.json.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hwgen.errors import HwgenError
from hwgen.steps.build import (SPI_TOP_NAME, load_build, post_route_timing, read_report, report_lock, say,
                               write_report)

IMPL_FOLDER = "impl"


def _store(build_dir: Path, board_name: str, section: dict[str, Any]) -> None:
    """Set ``implementation.<board>`` of report.json under the report lock, other boards' results kept."""
    with report_lock(build_dir):
        report = read_report(build_dir)
        impl = dict(report.get("implementation") or {})
        impl[board_name] = section
        report["implementation"] = dict(sorted(impl.items()))
        if isinstance(report.get("timing"), dict):  # an estimated build: its timing shows the post-route figure
            report["timing"] = {**report["timing"], "post_route": post_route_timing(report)}
        write_report(build_dir, report)


def _replace(tmp: Path, final: Path) -> None:
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def implement_build(build_dir: str, board_name: str | None = None, clock_mhz: float | None = None,
                    seed: int = 1) -> dict[str, Any]:
    """Run the open flow on the build's board top for ``board_name`` (default: the build's board); write
    ``implementation.<board>`` and ``DIR/impl/<board>/``. HwgenError (after writing both) when the design
    does not fit or misses its clock."""
    from hwgen.codegen.vivado import BOARD_TOP, OPEN_PIN, POR_CYCLES, plan_board_io, ports_from_verilog, \
        render_template
    from hwgen.estimate.boards import resolve_target
    from hwgen.estimate.openflow import (family_of, fit_problems, parse_report, place_and_route,
                                         synthesize_family, tool_versions, write_constraints)

    t0 = time.monotonic()
    build_dir = Path(build_dir)
    load_build(build_dir)
    report = read_report(build_dir)
    built_for = (report.get("hardware") or {}).get("board")
    if not built_for:
        raise HwgenError(f"{build_dir}: report.json names no board (rebuild with 'hwgen build')")
    board = resolve_target(board_name or built_for)
    if not board.device.open_flow:
        raise HwgenError(f"board {board.name} ({board.part}) has no open place-and-route flow; give --board with "
                         "an ECP5, iCE40 or Gowin board (e.g. --board ulx3s_85f: the same Verilog on an ECP5, as a "
                         "proxy), or run 'hwgen vivado' for the Spartan-7")
    fam = family_of(board)
    clock = board.clock_mhz if clock_mhz is None else float(clock_mhz)
    if not (math.isfinite(clock) and 0 < clock <= 1000):
        raise HwgenError(f"--clock-mhz must be a frequency in (0, 1000] MHz, not {clock_mhz!r}")
    spi = build_dir / "rtl" / f"{SPI_TOP_NAME}.v"
    if not spi.is_file():
        raise HwgenError(f"{spi}: missing (rebuild with 'hwgen build')")
    ports = ports_from_verilog(spi.read_text(errors="replace"), SPI_TOP_NAME)
    plan = plan_board_io(board, ports, SPI_TOP_NAME, OPEN_PIN)
    top = plan["vivado_top"]
    proxy = resolve_target(built_for).device.family != board.device.family

    impl_root = build_dir / IMPL_FOLDER
    impl_root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{board.name}.tmp-", dir=impl_root))
    os.chmod(work, 0o755)
    final = impl_root / board.name
    rel = f"{IMPL_FOLDER}/{board.name}"
    section: dict[str, Any] = {
        "board": board.name, "device": board.part, "family": board.device.family,
        "package": board.package, "speed": board.speed, "top": top, "built_for": built_for, "proxy": proxy,
        "tool": {"flow": f"yosys {fam.synth} + {fam.nextpnr} + {fam.packer}", "versions": tool_versions(fam)},
        "clock_mhz": clock, "board_clock_mhz": board.clock_mhz, "folder": rel,
        "nextpnr_log": f"{rel}/nextpnr.log", "seed": seed,
    }
    try:
        sources = [spi]
        if plan["shim"]:
            s = plan["shim"]
            unconnected = bool(s["wires"]) or any(not c["expr"] for c in s["connections"])
            (work / f"{BOARD_TOP}.v").write_text(render_template(
                "board_top.v.j2", board=board, top=SPI_TOP_NAME, module_name=s["name"], ports=s["ports"],
                connections=s["connections"], wires=s["wires"], assigns=s["assigns"], dropped=s["dropped"],
                por=s["por"], unconnected=unconnected, por_cycles=POR_CYCLES, por_bits=POR_CYCLES.bit_length(),
                clock_port="clk"))
            sources.append(work / f"{BOARD_TOP}.v")
            section["board_top"] = s["dropped"]
        pins = f"pins.{fam.constraints}"
        write_constraints(board, plan["constraints"], work / pins, clock)
        say(f"impl: yosys {fam.synth} of {top} for {board.name} ({board.part})")
        counts = synthesize_family(sources, top, work, fam)
        section["synthesis"] = {k: counts[k] for k in ("lut", "ff", "dsp", "bram", "carry", "tool", "command",
                                                         "seconds")}
        section["tool"]["flow"] = f"{counts['tool']} + {fam.nextpnr} + {fam.packer}"
        problems = fit_problems(counts, board)
        if problems:
            section.update(fits=False, met=False, problems=problems)
            raise HwgenError(f"the design does not fit {board.part} ({board.name}): " + "; ".join(problems))
        pnr = place_and_route(board, work, pins, clock, seed, say, log_dir=final)
        parsed = parse_report(pnr["report"])
        fmax = parsed["fmax_mhz"]
        met = bool(fmax) and all(f >= clock for f in fmax.values())
        section.update(fits=True, **parsed, met=met, bitstream=f"{rel}/{pnr['bitstream']}",
                       nextpnr_s=pnr["pnr_s"], pack_s=pnr["pack_s"])
        for big in ("synth.json", "pnr.config", "pnr.asc", "pnr.json", "src"):  # intermediates, megabytes
            path = work / big
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    except HwgenError as exc:
        section.setdefault("fits", None)  # a tool failed before fit was known
        message = str(exc).replace(str(work), str(final))
        section.update(met=False, error=message, wall_s=round(time.monotonic() - t0, 1))
        _replace(work, final)
        _store(build_dir, board.name, section)
        raise HwgenError(f"{message} (report.json implementation.{board.name} written)") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    section["wall_s"] = round(time.monotonic() - t0, 1)
    _replace(work, final)
    _store(build_dir, board.name, section)
    summary = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in section["utilisation"].items()
                        if k in (fam.multiplier, "TRELLIS_COMB", "ICESTORM_LC", "LUT4", "TRELLIS_FF",
                                 "DP16KD", "ICESTORM_RAM", "ICESTORM_DSP", "BSRAM", "DFF", "MULT18X18"))
    fmax_text = ", ".join(f"{k} {v:g} MHz" for k, v in section["fmax_mhz"].items()) or "no clock"
    print(f"{board.name} ({board.part}{', speed ' + board.speed if board.speed else ''}): {summary}")
    cp = section.get("critical_path") or {}
    print(f"post-route Fmax: {fmax_text} (target {clock:g} MHz: {'met' if section['met'] else 'missed'})"
          + (f"; critical path {cp['from']} -> {cp['to']}: {cp['total_ns']:.2f} ns ({cp['logic_ns']:.2f} logic, "
             f"{cp['routing_ns']:.2f} routing)" if cp else ""))
    print(f"bitstream: {build_dir / section['bitstream']} ({section['wall_s']:.0f} s)")
    if not section["met"]:
        raise HwgenError(f"{board.name} ({board.part}): post-route Fmax {fmax_text} misses the {clock:g} MHz clock"
                         + (f" (critical path {cp['from']} -> {cp['to']}, {cp['total_ns']:.1f} ns)" if cp else "")
                         + f"; bitstream and report.json implementation.{board.name} written")
    return section
