"""Resource estimate with Yosys synth_xilinx, and the fit decision."""

import pytest

from hwgen.errors import HwgenError
from hwgen.estimate.boards import PartResources, load_board, load_part
from hwgen.estimate.resources import count_cells, fit, parse_ltp, synthesize
from hwgen.estimate.timing import parse_sta

# A registered 8x8 multiplier (-> DSP48E1), a 512x16 synchronous memory (-> RAMB18E1), a 32x8
# asynchronous-read memory (-> distributed RAM), a counter (-> CARRY4) and some LUT logic.
SMALL_DESIGN = """
module est_small (
    input  wire              clk,
    input  wire              rst,
    input  wire signed [7:0] a,
    input  wire signed [7:0] b,
    input  wire              we,
    input  wire [8:0]        waddr,
    input  wire [8:0]        raddr,
    input  wire [15:0]       wdata,
    input  wire [4:0]        laddr,
    output reg signed [15:0] p,
    output reg [15:0]        q,
    output wire [7:0]        l,
    output wire [7:0]        x,
    output reg [11:0]        count
);
    reg signed [7:0] a_r, b_r;
    always @(posedge clk) begin
        a_r <= a;
        b_r <= b;
        p <= a_r * b_r;
    end
    reg [15:0] bram [0:511];
    always @(posedge clk) begin
        if (we) bram[waddr] <= wdata;
        q <= bram[raddr];
    end
    reg [7:0] lram [0:31];
    always @(posedge clk) if (we) lram[laddr] <= wdata[7:0];
    assign l = lram[laddr];
    assign x = (a ^ b) | wdata[15:8];
    always @(posedge clk) count <= rst ? 12'd0 : count + 12'd1;
endmodule
"""

TINY = PartResources(lut=10, ff=8, dsp=0, bram36=0, lutram_luts=0, lutram_kbit=0)


@pytest.fixture(scope="module")
def small_estimate(tmp_path_factory):
    d = tmp_path_factory.mktemp("est_small")
    src = d / "est_small.v"
    src.write_text(SMALL_DESIGN)
    return synthesize([src], "est_small", d / "work")


@pytest.mark.slow
def test_small_design_counts(small_estimate):
    r = small_estimate
    assert r["dsp"] == 1
    assert r["ramb18"] == 1 and r["ramb36"] == 0 and r["bram36"] == 0.5
    assert r["lutram_luts"] > 0 and r["lutram_cells"]
    assert r["carry4"] >= 3  # 12-bit counter: 3 CARRY4
    # 12 counter bits; the multiplier's registers go into the DSP, the read register into the BRAM
    assert r["ff"] == 12
    assert r["lut_logic"] >= 8  # 8 x LUT3 for x
    assert r["lut"] == r["lut_logic"] + r["lutram_luts"]
    assert sum(r["lut_by_size"].values()) <= r["lut_logic"]
    assert r["tool"].startswith("yosys synth_xilinx 0.")
    assert isinstance(r["logic_levels"], int) and r["logic_levels"] >= 3  # through the carry chain


@pytest.mark.slow
def test_small_design_fits_xc7s15_but_not_a_tiny_part(small_estimate):
    assert fit(small_estimate, load_board("elastic_node_v5")) == (True, [])
    ok, problems = fit(small_estimate, TINY)
    assert not ok
    text = "\n".join(problems)
    assert "dsp: 1 used, 0 available" in text
    assert "bram36: 0.5 used, 0 available" in text


def test_synthesis_error_is_a_clear_hwgen_error(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b); assign b = a +; endmodule\n")
    with pytest.raises(HwgenError, match="yosys synth_xilinx failed"):
        synthesize([bad], "bad", tmp_path / "work", timing=False, quiet=True)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(HwgenError, match="nothere.v"):
        synthesize([tmp_path / "nothere.v"], "x", tmp_path)


def test_count_cells_units():
    r = count_cells({
        "LUT2": 3, "LUT6": 2, "INV": 1, "FDRE": 5, "FDCE": 2, "DSP48E1": 4,
        "RAMB36E1": 2, "RAMB18E1": 3, "RAM64M": 2, "RAM32X1D": 1, "CARRY4": 7, "MUXF7": 1, "$scopeinfo": 3,
    })  # fmt: skip
    assert r["lut_logic"] == 6
    assert r["lutram_luts"] == 2 * 4 + 2
    assert r["lut"] == 6 + 10
    assert r["ff"] == 7 and r["dsp"] == 4 and r["carry4"] == 7
    assert r["bram36"] == 3.5
    assert r["other_cells"] == {"MUXF7": 1}


def test_fit_names_every_resource_over_and_by_how_much():
    used = {"lut": 7000, "ff": 100, "dsp": 31, "bram36": 12.5, "lutram_luts": 0, "carry4": 10}
    ok, problems = fit(used, load_part("xc7s15"))
    assert not ok
    assert "dsp: 31 used, 20 available (+11, 155%)" in problems
    assert "bram36: 12.5 used, 10 available (+2.5, 125%)" in problems
    # 7000 LUTs exceed the 80 % routing margin of 8000
    assert any(p.startswith("lut: 7000 used, 6400 usable (80% of 8000) (+600, 88%)") for p in problems)
    assert not any(p.startswith("ff") for p in problems)


def test_fit_margin_and_success():
    used = {"lut": 7000, "ff": 100, "dsp": 20, "bram36": 10}
    assert fit(used, load_part("xc7s15"), lut_margin=0.9) == (True, [])
    assert fit(used, load_part("xc7s15"))[0] is False
    with pytest.raises(HwgenError):
        fit(used, load_part("xc7s15"), lut_margin=0)


def test_parse_ltp():
    text = """
3. Executing LTP pass (find longest path).

Longest topological path in add32 (length=3):
    0: \\br [3]
    1: $abc$o8 (via $abc$lut$o8)
    2: $abc$i169 (via slice[0].carry4)
    3: $abc$o139 (via $abc$lut$o139)
"""
    assert parse_ltp(text) == (3, ["$abc$lut$o8", "slice[0].carry4", "$abc$lut$o139"])
    assert parse_ltp("nothing here") == (None, [])


# Two register stages around a 32-bit adder (a CARRY4 chain) and a 4-input XOR: the adder path is the longest.
STA_DESIGN = """
module sta_small (input wire clk, input wire [31:0] a, input wire [31:0] b, input wire [3:0] c,
                  output reg [31:0] s, output reg x);
    reg [31:0] a_r, b_r;
    reg [3:0] c_r;
    always @(posedge clk) begin
        a_r <= a; b_r <= b; c_r <= c;
        s <= a_r + b_r;
        x <= ^c_r;
    end
endmodule
"""


@pytest.fixture(scope="module")
def sta_estimate(tmp_path_factory):
    d = tmp_path_factory.mktemp("sta_small")
    src = d / "sta_small.v"
    src.write_text(STA_DESIGN)
    return synthesize([src], "sta_small", d / "work", quiet=True)


@pytest.mark.slow
def test_sta_logic_delay_of_a_registered_adder(sta_estimate):
    sta = sta_estimate["sta"]
    # Flip-flop to flip-flop through the adder: clock-to-Q 303 ps, a LUT, 8 CARRY4 (the 32-bit chain), the D
    # setup. prjxray's figures put it near 2 ns; without the timing models of the flip-flops the D pins
    # would be no endpoints and no register-to-register path would be found at all.
    assert 1.0 < sta["logic_delay_ns"] < 4.0
    assert sta["path_start"]["type"] == "FDRE" and sta["path_start"]["pin"] == "C"
    assert sta["path_end"]["type"] == "FDRE" and sta["path_end"]["pin"] == "D"
    assert sta["path_end"]["register"].startswith("s[")
    assert sta["path_cells"][0] == "FDRE" and sta["path_cells"].count("CARRY4") >= 4


def test_parse_sta():
    text = """
5. Executing STA pass (static timing analysis).
Latest arrival time in 'top' is 4905:
    4905 _10409_ (FDRE.R)
           \\_01804_
    4501 _09649_ (LUT2.I1->O)
           \\_04714_ [1]
    3628 _10252_ (CARRY4.CI->O)
           \\_00120_
    2454 buf4.1.0 (RAMB18E1.CLKBWRCLK->DOBDO)
       0   \\clk (<primary input>)

Arrival histogram:
"""
    netlist = "  FDRE #(\n    .INIT(1'hx)\n  ) _10409_ (\n    .C(clk),\n    .Q(\\acc [15]),\n    .R(_01804_)\n  );\n"
    r = parse_sta(text, netlist)
    assert r["logic_delay_ns"] == 4.905
    assert r["path_start"] == {"cell": "buf4.1.0", "type": "RAMB18E1", "pin": "CLKBWRCLK", "drives": "\\_00120_"}
    assert r["path_end"] == {"cell": "_10409_", "type": "FDRE", "pin": "R", "register": "\\acc [15]"}
    assert r["path_cells"] == ["RAMB18E1", "CARRY4", "LUT2"]
    assert parse_sta("No timing paths found.") is None
    # the latest arrival on an output that drives nothing (a carry chain's unused top bit)
    dangling = """
Latest arrival time in 'hwgen_top' is 3331:
    3331 (<unknown>)
Warning: Critical-path does not terminate in a recognised endpoint.
           \\_02009_
    3331 _11576_ (CARRY4.CI->O)
           \\_02008_
    2997 _11575_ (CARRY4.S->CO)
           \\u_avgpool.rq.prod [4]
    1671 _15920_ (DSP48E1.CLK->P)
       0   \\clk (<primary input>)
Warning: Endpoint hwgen_top.x [36] has no (* sta_arrival *) value.
"""
    r = parse_sta(dangling, netlist)
    assert r["logic_delay_ns"] == 3.331
    assert r["path_end"] == {"cell": None, "type": "unconnected", "pin": None}
    assert r["path_start"] == {"cell": "_15920_", "type": "DSP48E1", "pin": "CLK", "drives": "\\u_avgpool.rq.prod [4]"}
    assert r["path_cells"] == ["DSP48E1", "CARRY4", "CARRY4"]
