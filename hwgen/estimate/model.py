"""Fast resource model of the accelerator, for choosing ``--parallel auto`` without running Yosys.

DSP48E1 come from the design itself (``dsp_count``: the MAC lanes plus the rescale multipliers each unit
declares). LUTs and flip-flops are fits in the parallelism P to Yosys synth_xilinx 0.70 counts of the
reference model (W8A8, d_model 16, FFN 64, window 24) at P = 4, 8, 13, 20:

    P      4     8     13    20
    LUT    3361  3857  4247  6543   model: 3648 - 97.1 P + 12.0 P^2 (within 218 LUT, 5.4%)
    FF     1691  2020  2305  2843   model: 1420 + 70.6 P            (within 35 FF)
    DSP    11    15    20    27     dsp_count: exact on these and on W6/W4 at P = 13 (19)
    BRAM36 5     4     4.5   3      model: 5 (the largest seen)

They are scaled by the model's MAC count relative to the reference (the weight ROM and buffers grow with
it), which is a first-order guess outside the calibration points: run 'hwgen estimate' for the real count.
"""

from __future__ import annotations

from hwgen.estimate.resources import LUT_MARGIN
from hwgen.hw.lower import Design, build_design
from hwgen.hw.units import UNITS
from hwgen.ir.graph import Graph
from hwgen.ops import macs

REFERENCE_MACS = 94_864
LUT_FIT = (3648.3, -97.11, 11.995)  # a + b P + c P^2
FF_FIT = (1419.9, 70.65)
BRAM36_MAX_SEEN = 5.0


def dsp_count(design: Design, rescale_in_dsp: bool = True) -> int:
    """DSP48E1 slices: the MAC lanes plus, when ``rescale_in_dsp`` (what Yosys synth_xilinx does: it
    ignores the ``use_dsp = "no"`` hint of ``hwgen.hw.vendor``), each unit's rescale multipliers. Measured
    with Yosys 0.70 on the reference model: 20 at P=13, 27 at P=20 (the matmul requantizer's 26x17 product
    takes two DSPs)."""
    if not rescale_in_dsp:
        return design.lanes
    return design.lanes + sum(UNITS[kind].dsps(design) for kind in design.programs)


def predict(design: Design) -> dict[str, float]:
    """Predicted lut, ff, dsp and bram36 of the accelerator of ``design`` after Yosys synth_xilinx."""
    graph = design.graph
    size = max(sum(macs(graph, n) for n in graph.nodes) / REFERENCE_MACS, 0.25)
    p = float(design.lanes)
    lut = (LUT_FIT[0] * size) + LUT_FIT[1] * p + LUT_FIT[2] * p * p
    ff = FF_FIT[0] * size + FF_FIT[1] * p
    return {"lut": lut, "ff": ff, "dsp": dsp_count(design), "bram36": BRAM36_MAX_SEEN * size}


def predict_graph(graph: Graph, parallel: int) -> dict[str, float]:
    """:func:`predict` of ``graph`` at ``parallel`` lanes (lowered without ROM images)."""
    return predict(build_design(graph, parallel, images=False))


def fits(prediction: dict[str, float], capacity, lut_margin: float = LUT_MARGIN) -> bool:
    """Whether a prediction fits the part (LUTs with ``lut_margin``, as ``hwgen.estimate.resources.fit``)."""
    return (prediction["lut"] <= lut_margin * capacity.lut and prediction["ff"] <= capacity.ff
            and prediction["dsp"] <= capacity.dsp and prediction["bram36"] <= capacity.bram36)
