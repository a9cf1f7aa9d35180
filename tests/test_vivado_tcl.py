"""The Vivado hand-off checked without Vivado: the generated vivado/build.tcl runs in tclsh with recording
stubs for every Vivado command it may call (and the XDC it reads, with stubs for the XDC commands). Every
call must be a Vivado batch-mode command with well-formed options, every file it reads must exist in the
build folder, and the part, top, clock pin and period must be the board's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hwgen.estimate.boards import load_board

TCLSH = shutil.which("tclsh")
pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh not installed (Debian package tcl)")
ROOT = Path(__file__).resolve().parents[1]

# Vivado batch-mode commands the hand-off may use: option -> number of values it takes; "positional": how
# many plain arguments (files) at most. From Vivado's Tcl command reference (UG835).
VIVADO = {
    "read_verilog": {"options": {"-library": 1, "-sv": 0, "-quiet": 0, "-verbose": 0}, "positional": 99},
    "read_xdc": {"options": {"-ref": 1, "-cells": 1, "-unmanaged": 0, "-quiet": 0, "-verbose": 0},
                 "positional": 99},
    "synth_design": {"options": {"-part": 1, "-top": 1, "-mode": 1, "-flatten_hierarchy": 1, "-directive": 1,
                                 "-include_dirs": 1, "-generic": 1, "-verilog_define": 1, "-quiet": 0,
                                 "-verbose": 0}, "positional": 0},
    "opt_design": {"options": {"-directive": 1, "-quiet": 0, "-verbose": 0}, "positional": 0},
    "place_design": {"options": {"-directive": 1, "-quiet": 0, "-verbose": 0}, "positional": 0},
    "phys_opt_design": {"options": {"-directive": 1, "-quiet": 0, "-verbose": 0}, "positional": 0},
    "route_design": {"options": {"-directive": 1, "-quiet": 0, "-verbose": 0}, "positional": 0},
    "report_utilization": {"options": {"-file": 1, "-hierarchical": 0, "-append": 0, "-quiet": 0},
                           "positional": 0},
    "report_timing_summary": {"options": {"-file": 1, "-max_paths": 1, "-delay_type": 1, "-report_unconstrained": 0,
                                          "-warn_on_violation": 0, "-quiet": 0}, "positional": 0},
    "report_power": {"options": {"-file": 1, "-quiet": 0}, "positional": 0},
    "write_bitstream": {"options": {"-force": 0, "-bin_file": 0, "-quiet": 0}, "positional": 1},
}
# XDC commands (sourced by the read_xdc stub)
XDC = {"set_property", "create_clock", "get_ports", "set_false_path", "get_iobanks", "current_design"}

STUBS = r"""
set ::calls [open $::env(HWGEN_TCL_LOG) w]
proc record {args} { puts $::calls [join $args "\x1f"] }
foreach cmd {%(vivado)s} {
    proc $cmd {args} [format {record %%s {*}$args} $cmd]
}
rename read_xdc {}
proc read_xdc {args} {
    record read_xdc {*}$args
    set f [lindex $args end]
    if {[file exists $f]} { uplevel #0 [list source $f] }
}
proc get_ports {pattern} { record get_ports $pattern; return [list port $pattern] }
proc get_iobanks {bank} { record get_iobanks $bank; return [list bank $bank] }
proc current_design {} { record current_design; return design }
proc set_property {args} { record set_property {*}$args }
proc create_clock {args} { record create_clock {*}$args }
proc set_false_path {args} { record set_false_path {*}$args }
proc unknown {args} { record UNKNOWN {*}$args; return "" }
source [lindex $argv 0]
close $::calls
"""


def run_tcl(folder: Path, tmp: Path) -> list[list[str]]:
    """Run ``folder/build.tcl`` (a copy, so the build folder stays untouched) under the stubs; the calls."""
    work = tmp / "vivado"
    shutil.copytree(folder, work)
    stubs = tmp / "stubs.tcl"
    stubs.write_text(STUBS % {"vivado": " ".join(VIVADO)})
    log = tmp / "calls.txt"
    proc = subprocess.run([TCLSH, str(stubs), str(work / "build.tcl")], capture_output=True, text=True,
                          env={"HWGEN_TCL_LOG": str(log), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\x1f") for line in log.read_text().splitlines()], work


def check_options(name: str, args: list[str]) -> list[str]:
    """The plain (positional) arguments of one call; AssertionError on an unknown or malformed option."""
    spec = VIVADO[name]
    plain, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            assert a in spec["options"], f"{name}: option {a} is not one Vivado's {name} takes"
            n = spec["options"][a]
            assert i + n < len(args) + (0 if n else 1), f"{name}: option {a} needs {n} value(s)"
            for v in args[i + 1:i + 1 + n]:
                assert not v.startswith("-") and v, f"{name} {a}: bad value {v!r}"
            i += 1 + n
        else:
            plain.append(a)
            i += 1
    assert len(plain) <= spec["positional"], f"{name}: {len(plain)} plain arguments ({plain})"
    return plain


def _build(tmp: Path, board: str) -> Path:
    from hwgen.steps.build import build

    out = tmp / f"build-{board}"
    build(str(ROOT / "models" / "pm25_w8.pt"), str(out), board_name=board, parallel=4, with_accuracy=False)
    return out


@pytest.mark.parametrize("board_name", ["elastic_node_v5", "arty_s7_25", "spartan_edge_accelerator"])
def test_build_tcl_runs_against_vivado_stubs(tmp_path, board_name):
    board = load_board(board_name)
    out = _build(tmp_path, board_name)
    calls, work = run_tcl(out / "vivado", tmp_path)
    names = [c[0] for c in calls]
    assert "UNKNOWN" not in names, [c for c in calls if c[0] == "UNKNOWN"]
    flow = [n for n in names if n in VIVADO]
    assert flow[-8:] == ["synth_design", "opt_design", "place_design", "route_design", "report_utilization",
                         "report_timing_summary", "report_power", "write_bitstream"]
    assert flow.index("synth_design") > max(i for i, n in enumerate(flow) if n.startswith("read_"))
    read = []
    for call in calls:
        if call[0] in VIVADO:
            plain = check_options(call[0], call[1:])
            if call[0] in ("read_verilog", "read_xdc"):
                read += plain
        else:
            assert call[0] in XDC, call
    assert read, "build.tcl reads no file"
    for f in read:  # relative to the hand-off folder (build.tcl cds there), inside the build folder
        path = (work / f).resolve()
        assert path.is_file(), f"build.tcl reads {f}, which does not exist"
        assert (out / "vivado" / f).resolve().is_file()
    synth = next(c for c in calls if c[0] == "synth_design")
    opts = dict(zip(synth[1::2], synth[2::2]))
    assert opts["-part"] == board.part
    manifest_top = (out / "vivado" / "hwgen_vivado.json").read_text()
    assert f'"vivado_top": "{opts["-top"]}"' in manifest_top
    top_defined = any(f"module {opts['-top']}" in (work / f).read_text() for f in read if f.endswith(".v"))
    assert top_defined, f"no Verilog file read defines the top {opts['-top']}"
    # the XDC: the board's clock pin and period on port clk
    clocks = [c for c in calls if c[0] == "create_clock"]
    assert len(clocks) == 1
    clock = dict(zip(clocks[0][1::2], clocks[0][2::2]))
    assert float(clock["-period"]) == pytest.approx(1000.0 / board.clock_mhz, abs=1e-3)
    pins = [c for c in calls if c[0] == "set_property" and c[1] == "-dict"]
    clk_pin = [c for c in pins if "PACKAGE_PIN" in c[2] and c[3] == "port clk"]
    assert clk_pin and f"PACKAGE_PIN {board.clock_pin} " in clk_pin[0][2]


def test_a_wrong_option_is_caught(tmp_path):
    with pytest.raises(AssertionError, match="-prat"):
        check_options("synth_design", ["-prat", "xc7s15ftgb196-1"])
    with pytest.raises(AssertionError, match="needs 1"):
        check_options("synth_design", ["-part"])
