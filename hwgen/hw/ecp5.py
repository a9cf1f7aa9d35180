"""The MAC lane's multiplier as a Lattice ECP5 ``MULT18X18D`` with its own registers.

Yosys ``synth_ecp5`` maps a product onto a MULT18X18D with every register of the cell off and leaves the
operand and product flip-flops in the fabric, so each MAC lane pays two routes between the fabric and the
multiplier in one cycle (the critical path of the W8 model on an LFE5U-25F: 11.2 ns, 6.7 ns of it routing).
A build for an ECP5 board (``--board ulx3s_25f``) instantiates the cell instead, with the input registers
(``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``), the pipeline register (``REG_PIPELINE_CLK``) and the output register
(``REG_OUTPUT_CLK``) on: the same three register stages the generic lane has (operands at the multiplier,
product, product again), so the lane's latency, and the whole design's cycle count, stay as they are.

Only builds for ECP5 boards carry the cell; every other family gets the generic product (the shipped
XC7S15 Verilog is unchanged). Simulating such a build needs a model of the cell: ``SIM_MODEL`` is the
Verilog of the subset used here (signed or unsigned 18 x 18 bits, each register stage either off or on CLK0
with CE0 and a synchronous RST0), which ``hwgen sim`` appends to the Verilog when the cell occurs in it.
Lattice's FPGA-TN-02205 (ECP5 sysDSP) describes the stages: A/B input registers, a pipeline register after
the multiplier and an output register, each one clock.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal

CELL = "MULT18X18D"
WIDTH = 18  # signed operand bits one cell takes
LATENCY = 3  # input, pipeline and output register


def fits(a_width: int, b_width: int) -> bool:
    """Whether a signed ``a_width`` x ``b_width`` product fits one cell."""
    return a_width <= WIDTH and b_width <= WIDTH


def mult18x18d(m: Module, name: str, a, b, product: Signal) -> None:
    """Add a registered MULT18X18D named ``name`` to ``m``: ``product`` is the signed product of ``a`` and
    ``b`` (signed Amaranth values of at most 18 bits, sign-extended to 18) ``LATENCY`` clock cycles after
    they are applied."""
    if not fits(len(a), len(b)):
        raise ValueError(f"a {len(a)} x {len(b)}-bit product does not fit one {CELL} ({WIDTH} x {WIDTH} bits)")
    a18, b18, p36 = Signal(WIDTH, name=f"{name}_a"), Signal(WIDTH, name=f"{name}_b"), Signal(2 * WIDTH, name=f"{name}_p")
    ports = {"i_SIGNEDA": Const(1, 1), "i_SIGNEDB": Const(1, 1), "i_SOURCEA": Const(0, 1),
             "i_SOURCEB": Const(0, 1), "i_CLK0": ClockSignal(), "i_CE0": Const(1, 1), "i_RST0": Const(0, 1)}
    for i in range(WIDTH):
        ports[f"i_A{i}"], ports[f"i_B{i}"], ports[f"i_C{i}"] = a18[i], b18[i], Const(0, 1)
    for i in range(2 * WIDTH):
        ports[f"o_P{i}"] = p36[i]
    params = {f"p_REG_{stage}_CLK": "CLK0" for stage in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")}
    m.submodules[name] = Instance(CELL, **params, **ports)
    m.d.comb += [a18.eq(a.as_signed()), b18.eq(b.as_signed()), product.eq(p36[:len(product)])]


def _model() -> str:
    a = ", ".join(f"A{i}" for i in range(WIDTH))
    b = ", ".join(f"B{i}" for i in range(WIDTH))
    c = ", ".join(f"C{i}" for i in range(WIDTH))
    p = ", ".join(f"P{i}" for i in range(2 * WIDTH))
    a_cat = ", ".join(f"A{i}" for i in reversed(range(WIDTH)))
    b_cat = ", ".join(f"B{i}" for i in reversed(range(WIDTH)))
    p_assign = "\n".join(f"  assign P{i} = p_out[{i}];" for i in range(2 * WIDTH))
    stages = ""
    for stage, src, dst, width in (("INPUTA", "a_in", "a_q", WIDTH + 1), ("INPUTB", "b_in", "b_q", WIDTH + 1),
                                   ("PIPELINE", "m_in", "m_q", 2 * WIDTH), ("OUTPUT", "m_q", "p_out", 2 * WIDTH)):
        stages += f"""
  reg [{width - 1}:0] {dst}_r = 0;  // cleared at configuration (GSR)
  always @(posedge CLK0) if (RST0) {dst}_r <= 0; else if (CE0) {dst}_r <= {src};
  assign {dst} = (REG_{stage}_CLK == "NONE") ? {src} : {dst}_r;"""
    return f"""// Simulation model of the Lattice ECP5 MULT18X18D subset hwgen instantiates (hwgen.hw.ecp5): an 18 x 18
// product, signed per operand, each register stage off ("NONE") or on CLK0 with CE0 and a synchronous RST0.
// For simulation only: synthesis uses the vendor cell.
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNUSEDPARAM */
module {CELL} #(
  parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0", parameter REG_INPUTA_RST = "RST0",
  parameter REG_INPUTB_CLK = "NONE", parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
  parameter REG_INPUTC_CLK = "NONE", parameter REG_INPUTC_CE = "CE0", parameter REG_INPUTC_RST = "RST0",
  parameter REG_PIPELINE_CLK = "NONE", parameter REG_PIPELINE_CE = "CE0", parameter REG_PIPELINE_RST = "RST0",
  parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0", parameter REG_OUTPUT_RST = "RST0",
  parameter CLK0_DIV = "ENABLED", parameter CLK1_DIV = "ENABLED", parameter CLK2_DIV = "ENABLED",
  parameter CLK3_DIV = "ENABLED", parameter HIGHSPEED_CLK = "NONE", parameter GSR = "ENABLED",
  parameter CAS_MATCH_REG = "FALSE", parameter SOURCEB_MODE = "B_SHIFT", parameter MULT_BYPASS = "DISABLED",
  parameter RESETMODE = "SYNC"
) (
  input {a},
  input {b},
  input {c},
  input SIGNEDA, input SIGNEDB, input SOURCEA, input SOURCEB, input CLK0, input CE0, input RST0,
  output {p}
);
  wire [{WIDTH}:0] a_in = {{SIGNEDA & A{WIDTH - 1}, {a_cat}}};
  wire [{WIDTH}:0] b_in = {{SIGNEDB & B{WIDTH - 1}, {b_cat}}};
  wire [{WIDTH}:0] a_q, b_q;
  wire [{2 * WIDTH - 1}:0] m_q, p_out;
  wire signed [{2 * WIDTH + 1}:0] m_full = $signed(a_q) * $signed(b_q);
  wire [{2 * WIDTH - 1}:0] m_in = m_full[{2 * WIDTH - 1}:0];{stages}
{p_assign}
endmodule
"""


SIM_MODEL = _model()
