"""The ECP5 MAC lanes (``hwgen.hw.ecp5``): registered MULT18X18D cells in builds for ECP5 boards.

The cell's simulation model against Python products for every register setting and signedness, Yosys
keeping the cells and absorbing the lane registers, and a whole ECP5 build bit-exact with stalls."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from hwgen.hw import ecp5
from hwgen.hw.lower import build_design
from hwgen.hw.mac import MacArray
from hwgen.hw.top import Top
from hwgen.steps.build import build, simulate_build
from tests.synthetic import SyntheticConfig, random_graph

REGS = ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")


def _model_bench(settings: dict[str, str], signed_a: int, signed_b: int, pairs: list[tuple[int, int]]) -> str:
    params = ", ".join(f'.REG_{k}_CLK("{v}")' for k, v in settings.items())
    conns = ", ".join([f".A{i}(a[{i}])" for i in range(18)] + [f".B{i}(b[{i}])" for i in range(18)]
                      + [f".C{i}(1'b0)" for i in range(18)] + [f".P{i}(p[{i}])" for i in range(36)])
    stim = "\n".join(f"    a = 18'd{a & 0x3FFFF}; b = 18'd{b & 0x3FFFF}; #1 $display(\"%0d\", p); @(posedge clk); #1;"
                     for a, b in pairs)
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 0; always #5 clk = ~clk;
  reg [17:0] a = 0, b = 0; wire [35:0] p;
  MULT18X18D #({params}) dut ({conns}, .SIGNEDA(1'b{signed_a}), .SIGNEDB(1'b{signed_b}), .SOURCEA(1'b0),
    .SOURCEB(1'b0), .CLK0(clk), .CE0(1'b1), .RST0(1'b0));
  initial begin
    @(posedge clk); #1;
{stim}
    $finish;
  end
endmodule
"""


def _expect(a: int, b: int, signed_a: int, signed_b: int) -> int:
    a, b = a & 0x3FFFF, b & 0x3FFFF
    if signed_a and a >= 1 << 17:
        a -= 1 << 18
    if signed_b and b >= 1 << 17:
        b -= 1 << 18
    return (a * b) & ((1 << 36) - 1)


@pytest.mark.parametrize("signed_a,signed_b", [(1, 1), (1, 0), (0, 1), (0, 0)])
@pytest.mark.parametrize("registered", [(), REGS, ("INPUTA", "INPUTB"), ("PIPELINE",), ("OUTPUT",)])
def test_cell_model_multiplies_with_each_register_stage_one_cycle(tmp_path, signed_a, signed_b, registered):
    rng = np.random.default_rng(len(registered) * 4 + signed_a * 2 + signed_b)
    edges = [0, 1, -1, (1 << 17) - 1, -(1 << 17), 127, -128]
    pairs = [(a, b) for a in edges for b in edges] + [tuple(int(v) for v in rng.integers(-(1 << 17), 1 << 17, 2))
                                                      for _ in range(40)]
    settings = {k: ("CLK0" if k in registered else "NONE") for k in REGS}
    (tmp_path / "tb.v").write_text(_model_bench(settings, signed_a, signed_b, pairs))
    (tmp_path / "cell.v").write_text(ecp5.SIM_MODEL)
    subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "tb.vvp"), str(tmp_path / "tb.v"),
                    str(tmp_path / "cell.v")], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], check=True, capture_output=True, text=True)
    got = [int(line) for line in out.stdout.split() if line.isdigit()]
    want = [_expect(a, b, signed_a, signed_b) for a, b in pairs]
    delay = len(registered) - ("INPUTA" in registered and "INPUTB" in registered)  # A and B: one stage
    # sampled before the clock edge that takes each operand pair: a product shows ``delay`` samples later
    assert len(got) == len(pairs)
    assert got[delay:] == want[:len(want) - delay]


def _lanes_verilog(multiplier: str) -> str:
    return verilog.convert(MacArray(4, 9, 8, 22, multiplier=multiplier), name="lanes", emit_src=False)


def test_ecp5_lanes_are_cells_with_every_register_on_and_generic_lanes_are_products():
    text = _lanes_verilog("ecp5")
    cells = re.findall(r"MULT18X18D #\((.*?)\) \w+ \(", text, re.S)
    assert len(cells) == 4
    for params in cells:
        for stage in REGS:
            assert re.search(rf'\.REG_{stage}_CLK\("CLK0"\)', params)
    assert "MULT18X18D" not in _lanes_verilog("generic")
    with pytest.raises(ValueError, match="multiplier must be one of"):
        MacArray(4, 9, 8, 22, multiplier="dsp48")


def test_wide_operands_keep_the_generic_product():
    text = verilog.convert(MacArray(2, 19, 8, 30, multiplier="ecp5"), name="lanes", emit_src=False)
    assert "MULT18X18D" not in text


def _yosys_counts(text: str, work: Path) -> dict:
    from hwgen.estimate.openflow import synthesize_family
    from hwgen.hw.vendor import FAMILIES

    work.mkdir()
    (work / "lanes.v").write_text(text)
    return synthesize_family([work / "lanes.v"], "lanes", work, FAMILIES["ecp5"], netlist=False)


def test_yosys_keeps_the_cells_and_their_registers_leave_the_fabric(tmp_path):
    cell = _yosys_counts(_lanes_verilog("ecp5"), tmp_path / "c")
    generic = _yosys_counts(_lanes_verilog("generic"), tmp_path / "g")
    assert cell["dsp"] == generic["dsp"] == 4
    # per lane: the second operand registers (8 bits of B; A's 9 are shared) and both 17-bit product
    # registers move into the cell
    assert generic["ff"] - cell["ff"] >= 4 * (8 + 2 * 17)


@pytest.fixture(scope="module")
def ecp5_build(tmp_path_factory):
    graph, _ = random_graph(SyntheticConfig(window=6, features=3, d_model=8, ffn=16), seed=3)
    folder = tmp_path_factory.mktemp("e5")
    graph.save(folder / "graph")
    build(str(folder / "graph"), str(folder / "B"), board_name="ulx3s_25f", parallel=4, with_accuracy=False)
    return folder / "B", graph


def test_ecp5_build_records_its_multiplier_and_every_step_takes_the_model_cycles(ecp5_build):
    out, graph = ecp5_build
    design = json.loads((out / "design.json").read_text())
    assert design["multiplier"] == "ecp5"
    assert (out / "rtl" / "hwgen_top.v").read_text().count("MULT18X18D #(") == 4
    # every rescale product of an ECP5 build is pipelined shift-add (no unregistered MULT18X18D)
    units = design["units"].values()
    assert any(u["rescale_in_fabric"] for u in units) and all(u["rescale_in_fabric"] or not u["rescale_dsps"] for u in units)
    generic = build_design(graph, 4)
    assert generic.multiplier == "generic" and "multiplier" not in generic.summary()
    assert "MULT18X18D" not in verilog.convert(Top(generic), name="hwgen_top", emit_src=False)
    t = graph.input_type.dtype
    xi = np.random.default_rng(6).integers(t.qmin, t.qmax + 1, size=(2, *graph.input_type.shape))
    sim = simulate_build(str(out), "verilator", inputs=xi)
    assert sim["mismatches"] == 0
    timed = [st for st in sim["cycles_per_step"] if not st.get("waits_on_input")]
    assert len(timed) >= 3 and all(st["cycles"] == st["model"] for st in timed)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_ecp5_build_is_bit_exact_with_stalls(ecp5_build, simulator):
    out, graph = ecp5_build
    rng = np.random.default_rng(5)
    t = graph.input_type.dtype
    xi = rng.integers(t.qmin, t.qmax + 1, size=(3, *graph.input_type.shape))
    sim = simulate_build(str(out), simulator, inputs=xi, stall=0.3, seed=4)
    assert sim["mismatches"] == 0 and sim["windows"] == 3
