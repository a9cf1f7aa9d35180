"""DSP count of the accelerator ``lower(graph, parallel)`` builds, for choosing the parallelism."""

from __future__ import annotations

from hwgen.hw.lower import build_design
from hwgen.ir.graph import Graph

# Multipliers per shared unit besides the MAC lanes (one unit per op kind, whatever the number of nodes):
# matmul requantizer; add a*ma and b*mb; affine x*mul; avgpool requantizer; softmax e*r; layernorm
# C*x, xc*xc, xc*r (two DSPs: wider than 25 x 18) and n*gamma.
RESCALE_MULTIPLIERS = {"matmul": 1, "add": 2, "affine": 1, "avgpool": 1, "softmax": 1, "layernorm": 5,
                       "argmax": 1, "anomaly": 2}
# Task heads: anomaly x*mx and rec*mr. The argmax unit only compares, yet Yosys 0.70 maps one more DSP48E1 in
# the classifier's design than the other units account for (measured: BasicMotions W8, 21 at P=13, 20 at P=12).


MATMUL_ACC_SPLIT_BITS = 25


def dsp_count(graph: Graph, parallel: int, rescale_in_dsp: bool = True) -> int:
    """DSP48E1 slices: ``parallel`` MAC lanes plus, when ``rescale_in_dsp`` (what Yosys synth_xilinx
    does: it ignores the ``use_dsp = "no"`` hint of ``hwgen.hw.vendor``), the rescale multipliers.
    Measured with Yosys 0.70 on the reference model at P=20: 26 = 20 + 6."""
    design = build_design(graph, parallel)
    if not rescale_in_dsp:
        return parallel
    extra = sum(RESCALE_MULTIPLIERS[kind] for kind in design.programs)
    # The matmul requantizer multiplies the accumulator by m0; Yosys splits it over two DSP48E1 once the
    # accumulator is 25 bits or wider (measured: W8 reference, 25-bit accumulator, 20 DSPs at P=13, 27 at
    # P=20; W6/W4, 23/22 bits, 19 at P=13).
    if "matmul" in design.programs and design.widths.get("matmul", {}).get("acc", 0) >= MATMUL_ACC_SPLIT_BITS:
        extra += 1
    return parallel + extra
