"""Logic delay of a synth_xilinx netlist: Yosys ``sta`` with the 7-series cell timing models.

What the figure is: the longest register-to-register path through the mapped cells (LUTs, CARRY4, MUXF7/8,
distributed RAM, DSP48E1, block RAM), in picoseconds, from the prjxray Artix-7 speed data that Yosys'
``cells_sim.v`` carries in its ``specify`` blocks: the start cell's clock-to-out, every cell's pin-to-pin
delay, the end cell's setup time. Primary inputs arrive at 0 ps and primary outputs are endpoints.

What it is not: routing is excluded (on a 7-series part, nets typically add as much again as the logic on
a path), so it is a lower bound on the real path delay, not a post-route figure; the numbers are
prjxray's Artix-7 data (the Spartan-7 fabric is the same family, its speed grade not modelled); no clock
skew, no hold check, one clock.

Trap this works around: ``cells_sim.v`` gives the flip-flops a D setup of 0 ps (prjxray: -46 ps, "negative
times not supported"), and ``sta`` ignores non-positive setups, so flip-flop D pins would be no endpoints
at all. ``TIMING_MODELS`` replaces FDRE/FDSE/FDCE/FDPE by timing-only blackboxes with the same figures and
a 1 ps D setup; every other cell keeps cells_sim.v's arcs (whose conditions ``sta`` does not evaluate, so a
block RAM's clock-to-out is its slower, unregistered-output 2,454 ps, the mode hwgen's memories use).
"""

from __future__ import annotations

import re

# Timing-only models (read before cells_sim.v with -nooverwrite, so these win). Figures from
# prjxray-db artix7 slicel.sdf / CLBLL_L.sdf as quoted in Yosys' cells_sim.v: clock-to-Q 303 ps, CE setup
# 109 ps, R/S setup 404 ps; D setup 1 ps instead of -46 ps so the D pin counts as an endpoint.
_FF = """(* blackbox *)
module {name} (output Q, input C, input CE, input D, input {sr});
  parameter [0:0] INIT = 1'b{init};
  parameter [0:0] IS_C_INVERTED = 1'b0;
  parameter [0:0] IS_D_INVERTED = 1'b0;
  parameter [0:0] IS_{sr}_INVERTED = 1'b0;
  specify
    $setup(D, posedge C, 1);
    $setup(CE, posedge C, 109);
    $setup({sr}, posedge C, 404);
    (posedge C => (Q : D)) = 303;
  endspecify
endmodule
"""
TIMING_MODELS = "".join(_FF.format(name=n, sr=sr, init=i) for n, sr, i in
                        (("FDRE", "R", 0), ("FDSE", "S", 1), ("FDCE", "CLR", 0), ("FDPE", "PRE", 1)))
MODELS_FILE = "timing_models.v"
NETLIST_FILE = "netlist.v"
STA_FILE = "sta.txt"
METHOD = ("yosys sta on the synth_xilinx netlist with the 7-series cell timing models (prjxray Artix-7 "
          "data in Yosys cells_sim.v; flip-flops as timing-only models with a 1 ps D setup): the longest "
          "register-to-register logic delay, clock-to-out and setup included, routing excluded")


def sta_commands(top: str) -> list[str]:
    """Yosys commands to append after ``synth_xilinx``: write the netlist, reload it with the timing
    models, run ``sta`` into ``STA_FILE``. ``MODELS_FILE`` must be in the working directory."""
    return [
        f"write_verilog -noattr {NETLIST_FILE}",
        "design -reset",
        f"read_verilog -specify {MODELS_FILE}",
        "read_verilog -lib -specify -nooverwrite +/xilinx/cells_sim.v",
        f"read_verilog {NETLIST_FILE}",
        f"hierarchy -top {top}",
        f"tee -q -o {STA_FILE} sta",
    ]


_CELL = re.compile(r"^\s*(-?\d+)\s+(\S+) \((\w+)\.(\w+)(?:->(\w+))?\)\s*$")
_INPUT = re.compile(r"^\s*(-?\d+)\s+(.+?) \(<primary input>\)\s*$")
_UNCONNECTED = re.compile(r"^\s*(-?\d+)\s+\(<unknown>\)\s*$")


def parse_sta(text: str, netlist: str = "") -> dict | None:
    """The worst path of a Yosys ``sta`` report: ``logic_delay_ns``, ``path_start`` (cell, type, the pin
    the path leaves from, the wire it drives; type "input" for a primary input) and ``path_end`` (cell,
    type, pin; ``register``: the wire on its Q pin, found in ``netlist``, the netlist ``sta`` read),
    ``path_cells`` (cell types along the path, start first). None when the report holds no path.

    When the latest arrival is on a net that drives nothing (``sta``: "does not terminate in a recognised
    endpoint", e.g. an unused output of a carry chain's last CARRY4), that arrival is still the figure: every
    register endpoint arrives no later (its 1 ps setup aside); ``path_end`` is then type "unconnected"."""
    m = re.search(r"Latest arrival time in '\S+' is (-?\d+):\n", text)
    if not m:
        return None
    end, cells, wire = None, [], None
    for line in text[m.end():].splitlines():
        if not line.strip():
            break
        c, i = _CELL.match(line), _INPUT.match(line)
        if end is None and _UNCONNECTED.match(line):
            end = {"cell": None, "type": "unconnected", "pin": None}
        elif line.lstrip().startswith("Warning:"):
            continue
        elif c and c.group(5) is None and end is None:  # the endpoint: "ps cell (TYPE.PIN)"
            end = {"cell": c.group(2), "type": c.group(3), "pin": c.group(4)}
        elif c:  # a cell on the path: "ps cell (TYPE.FROM->TO)", below the wire it drives
            cells.append({"cell": c.group(2), "type": c.group(3), "from": c.group(4), "drives": wire})
        elif i:
            cells.append({"cell": i.group(2), "type": "input", "from": None, "drives": i.group(2)})
            break
        else:
            wire = line.strip()
    if end is None or not cells:
        return None
    # The clock input ends every register-to-register path; the register is the cell it drives.
    if cells[-1]["type"] == "input" and len(cells) > 1 and cells[-2]["from"] in CLOCK_PINS:
        cells.pop()
    start = cells[-1]
    if netlist and end["cell"] is not None:
        end["register"] = _q_wire(netlist, end["cell"])
    return {
        "logic_delay_ns": round(int(m.group(1)) / 1000, 3),
        "path_start": {"cell": start["cell"], "type": start["type"], "pin": start["from"], "drives": start["drives"]},
        "path_end": end,
        "path_cells": [c["type"] for c in reversed(cells)],
    }


CLOCK_PINS = {"C", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK"}


def _q_wire(netlist: str, cell: str) -> str | None:
    """The wire on the Q (or P/DO) output of ``cell`` in a ``write_verilog -noattr`` netlist."""
    name = re.escape(cell if not cell.startswith("\\") else cell + " ")
    m = re.search(r"\) " + name + r"\s*\((.*?)\n\s*\);", netlist, flags=re.DOTALL)
    if not m:
        return None
    q = re.search(r"\.Q\((.*?)\),?\n", m.group(1) + "\n")
    return q.group(1).strip() if q else None
