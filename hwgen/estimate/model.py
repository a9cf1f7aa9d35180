"""Fast resource model of the accelerator, for choosing ``--parallel auto`` without running Yosys.

DSP48E1 come from the design itself (``dsp_count``: the MAC lanes plus the rescale multipliers each unit
keeps in DSP48E1; ``build_design(..., dsp_budget=...)`` moves units' rescale products into fabric as
shift-add until the part's DSPs suffice). LUTs and flip-flops are fits in the parallelism P to Yosys
synth_xilinx 0.70 counts of the reference model (W8A8, d_model 16, FFN 64, window 24; weight ROM in block
RAM) with every rescale product in DSP48E1, plus an estimate per rescale product in fabric
(``hwgen.hw.lower.fabric_luts``/``fabric_ffs`` scaled by FABRIC_LUT_SCALE/FABRIC_FF_SCALE):

    P                     4     8     13    16    20
    LUT, all in DSP       3361  3857  4247  4424  4656   fit: 2853 + 142.0 P - 2.63 P^2 (within 37 LUT)
    FF, all in DSP        1691  2020  2305  2514  2715   fit: 1473 + 63.6 P             (within 38 FF)
    DSP, all in DSP       11    15    20    23    27
    with dsp_budget 20    -     -     -     5029 LUT, 3428 FF, 20 DSP (add, affine in fabric)
                                            20: 6006 LUT, 4869 FF, 20 DSP (all five units in fabric)
    BRAM36                5     4     4.5   5     5      model: 5 (the largest seen)

The fabric estimate is within ~100 LUTs of these two points (P=16: +605 measured, P=20: +1,350). DSPs:
``dsp_count`` equals Yosys on all of them. Everything is scaled by the model's MAC count relative to the
reference (the weight ROM and buffers grow with it), which is a first-order guess outside the calibration
points: run 'hwgen estimate' for the real count. Logic a unit builds only for some graphs, which the
reference model does not have (``extra_logic``: the matrix unit's conv1d row addressing), is added as the
unit declares it.
"""

from __future__ import annotations

from hwgen.estimate.resources import LUT_MARGIN
from hwgen.hw.lower import Design, build_design, fabric_ffs, fabric_luts
from hwgen.hw.units import UNITS
from hwgen.ir.graph import Graph
from hwgen.ops import macs

REFERENCE_MACS = 94_864
LUT_FIT = (2852.7, 141.98, -2.6292)  # a + b P + c P^2
FF_FIT = (1473.3, 63.582)
FABRIC_LUT_SCALE = 0.82  # measured in-situ / fabric_luts: 605 / 634 at P=16, 1350 / 1770 at P=20
FABRIC_FF_SCALE = 0.85  # 914 / 1037 and 2154 / 2896
BRAM36_MAX_SEEN = 5.0


def dsp_count(design: Design, rescale_in_dsp: bool = True) -> int:
    """DSP48E1 slices: the MAC lanes plus, when ``rescale_in_dsp`` (what Yosys synth_xilinx does with a
    ``$mul``: it ignores the ``use_dsp = "no"`` hint of ``hwgen.hw.vendor``), the rescale multipliers of
    each unit not in ``design.fabric``. Measured with Yosys 0.70 on the reference model: 20 at P=13, 27 at
    P=20 with every rescale product in DSPs (the matmul requantizer's 26x17 product takes two DSPs), 20 at
    P=16 and P=20 with ``dsp_budget=20``."""
    if not rescale_in_dsp:
        return design.lanes
    return design.lanes + sum(UNITS[kind].dsps(design) for kind in design.programs)


def predict(design: Design) -> dict[str, float]:
    """Predicted lut, ff, dsp and bram36 of the accelerator of ``design`` after Yosys synth_xilinx."""
    graph = design.graph
    size = max(sum(macs(graph, n) for n in graph.nodes) / REFERENCE_MACS, 0.25)
    p = float(design.lanes)
    lut = (LUT_FIT[0] * size) + LUT_FIT[1] * p + LUT_FIT[2] * p * p
    lut += FABRIC_LUT_SCALE * sum(fabric_luts(design, kind) for kind in design.fabric)
    ff = FF_FIT[0] * size + FF_FIT[1] * p + FABRIC_FF_SCALE * sum(fabric_ffs(design, kind) for kind in design.fabric)
    extra = [UNITS[kind].extra_logic(design) for kind in design.programs]  # logic only some graphs have
    lut += sum(e[0] for e in extra)
    ff += sum(e[1] for e in extra)
    return {"lut": lut, "ff": ff, "dsp": dsp_count(design), "bram36": BRAM36_MAX_SEEN * size}


def predict_graph(graph: Graph, parallel: int, dsp_budget: int | None = None) -> dict[str, float]:
    """:func:`predict` of ``graph`` at ``parallel`` lanes (lowered without ROM images, rescale products
    moved into fabric as ``build_design`` does for ``dsp_budget``)."""
    return predict(build_design(graph, parallel, images=False, dsp_budget=dsp_budget))


def fits(prediction: dict[str, float], capacity, lut_margin: float = LUT_MARGIN) -> bool:
    """Whether a prediction fits the part (LUTs with ``lut_margin``, as ``hwgen.estimate.resources.fit``)."""
    return (prediction["lut"] <= lut_margin * capacity.lut and prediction["ff"] <= capacity.ff
            and prediction["dsp"] <= capacity.dsp and prediction["bram36"] <= capacity.bram36)
